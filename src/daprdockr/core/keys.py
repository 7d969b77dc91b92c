"""The etcd key schema, in one place.

Under a configurable prefix (default ``/daprdockr``)::

    <prefix>/services/<group>/<service>        desired ServiceSpec (JSON), written by the CLI
    <prefix>/instances/<group>/<service>/<n>   current InstanceRecord (JSON), on the owner's lease
    <prefix>/nodes/<node-id>                   NodeRecord (JSON), on the node's lease (heartbeat)
    <prefix>/applied/<node-id>                 {"revision": R}: the etcd revision whose removals the
                                               node's nginx and DNS have applied, on its lease
    <prefix>/history/<group>/<service>/<v>     version v of the spec (the last 10 are kept)
    <prefix>/rollouts/<group>/<service>        the rollout of the newest change (RolloutRecord)
    <prefix>/slots/<group>/<service>/<i>       replacement slot i (1..parallel), on the holder's lease
    <prefix>/drain/<node-id>                   the node is draining (no lease: it stays until undrain)

Instance numbers are decimal, 1-based, without leading zeros.  :meth:`KeySchema.parse` turns
a key back into what it names, or ``None`` for anything else under the prefix (garbage is the
reader's to log and skip, never to crash on).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from daprdockr.core.names import ServiceName, validate_label
from daprdockr.errors import ValidationError

DEFAULT_PREFIX = "/daprdockr"
KeyKind = Literal["service", "instance", "node", "applied", "history", "rollout", "slot", "drain"]


@dataclass(frozen=True, slots=True)
class ParsedKey:
    kind: KeyKind
    service: ServiceName | None = None
    number: int = 0
    node_id: str = ""


@dataclass(frozen=True, slots=True)
class KeySchema:
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/") or self.prefix.endswith("/") or "//" in self.prefix:
            raise ValidationError(
                f"{self.prefix!r} must start with '/' and not end with '/'", field="prefix"
            )

    @property
    def root(self) -> str:
        return self.prefix + "/"

    @property
    def services_prefix(self) -> str:
        return f"{self.prefix}/services/"

    @property
    def instances_prefix(self) -> str:
        return f"{self.prefix}/instances/"

    @property
    def nodes_prefix(self) -> str:
        return f"{self.prefix}/nodes/"

    def service(self, name: ServiceName) -> str:
        return f"{self.prefix}/services/{name.group}/{name.service}"

    def instance(self, name: ServiceName, number: int) -> str:
        return f"{self.prefix}/instances/{name.group}/{name.service}/{number}"

    def instances_of(self, name: ServiceName) -> str:
        """The prefix of every instance key of ``name``."""
        return f"{self.prefix}/instances/{name.group}/{name.service}/"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}/nodes/{node_id}"

    def history(self, name: ServiceName, version: int | None = None) -> str:
        base = f"{self.prefix}/history/{name.group}/{name.service}/"
        return base if version is None else f"{base}{version:08d}"

    def rollout(self, name: ServiceName) -> str:
        return f"{self.prefix}/rollouts/{name.group}/{name.service}"

    def slot(self, name: ServiceName, index: int) -> str:
        return f"{self.prefix}/slots/{name.group}/{name.service}/{index}"

    def slots_of(self, name: ServiceName) -> str:
        """The prefix of every replacement slot key of ``name``."""
        return f"{self.prefix}/slots/{name.group}/{name.service}/"

    def drain(self, node_id: str) -> str:
        return f"{self.prefix}/drain/{node_id}"

    def applied(self, node_id: str) -> str:
        return f"{self.prefix}/applied/{node_id}"

    def parse(self, key: str) -> ParsedKey | None:  # (per watch event and per key of a full load)
        """What ``key`` names, or ``None`` if it is not a well-formed key of this schema."""
        root = self.prefix + "/"
        if not key.startswith(root):
            return None
        parts = key[len(root):].split("/")
        try:
            if parts[0] == "instances" and len(parts) == 4:  # (the most common key first)
                n = parts[3]
                if not n.isdigit() or n.startswith("0") or len(n) > 6:
                    return None
                return ParsedKey(kind="instance", service=_service(parts[2], parts[1]), number=int(n))
            if parts[0] == "services" and len(parts) == 3:
                return ParsedKey(kind="service", service=_service(parts[2], parts[1]))
            if parts[0] in ("nodes", "applied", "drain") and len(parts) == 2:
                kind: KeyKind = {"nodes": "node", "applied": "applied", "drain": "drain"}[parts[0]]  # type: ignore[assignment]
                return ParsedKey(kind=kind, node_id=validate_label(parts[1], field="node_id"))
            if parts[0] == "rollouts" and len(parts) == 3:
                return ParsedKey(kind="rollout", service=_service(parts[2], parts[1]))
            if parts[0] in ("history", "slots") and len(parts) == 4 and parts[3].isdigit() and len(parts[3]) <= 8:
                return ParsedKey(kind="history" if parts[0] == "history" else "slot",
                                 service=_service(parts[2], parts[1]), number=int(parts[3]))
        except ValidationError:
            return None
        return None


@functools.lru_cache(maxsize=1 << 14)
def _service(service: str, group: str) -> ServiceName:
    """The name of a key's service, checked once per name (the keys of one service repeat it)."""
    return ServiceName.parse(f"{service}.{group}")
