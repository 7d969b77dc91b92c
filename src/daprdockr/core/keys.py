"""The etcd key schema, in one place.

Under a configurable prefix (default ``/daprdockr``)::

    <prefix>/services/<group>/<service>        desired ServiceSpec (JSON), written by the CLI
    <prefix>/instances/<group>/<service>/<n>   current InstanceRecord (JSON), on the owner's lease
    <prefix>/nodes/<node-id>                   NodeRecord (JSON), on the node's lease (heartbeat)
    <prefix>/applied/<node-id>                 {"revision": R}: the etcd revision whose removals the
                                               node's nginx and DNS have applied, on its lease

Instance numbers are decimal, 1-based, without leading zeros.  :meth:`KeySchema.parse` turns
a key back into what it names, or ``None`` for anything else under the prefix (garbage is the
reader's to log and skip, never to crash on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from daprdockr.core.names import ServiceName, validate_label
from daprdockr.errors import ValidationError

DEFAULT_PREFIX = "/daprdockr"
KeyKind = Literal["service", "instance", "node", "applied"]


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

    def service_instances(self, name: ServiceName) -> str:
        return f"{self.prefix}/instances/{name.group}/{name.service}/"

    def instance(self, name: ServiceName, number: int) -> str:
        return f"{self.prefix}/instances/{name.group}/{name.service}/{number}"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}/nodes/{node_id}"

    @property
    def applied_prefix(self) -> str:
        return f"{self.prefix}/applied/"

    def applied(self, node_id: str) -> str:
        return f"{self.prefix}/applied/{node_id}"

    def parse(self, key: str) -> ParsedKey | None:
        """What ``key`` names, or ``None`` if it is not a well-formed key of this schema."""
        if not key.startswith(self.root):
            return None
        parts = key[len(self.root):].split("/")
        try:
            if parts[0] == "services" and len(parts) == 3:
                return ParsedKey(kind="service", service=ServiceName.parse(f"{parts[2]}.{parts[1]}"))
            if parts[0] == "instances" and len(parts) == 4:
                n = parts[3]
                if not n.isdigit() or n.startswith("0") or len(n) > 6:
                    return None
                return ParsedKey(
                    kind="instance",
                    service=ServiceName.parse(f"{parts[2]}.{parts[1]}"),
                    number=int(n),
                )
            if parts[0] in ("nodes", "applied") and len(parts) == 2:
                kind: KeyKind = "node" if parts[0] == "nodes" else "applied"
                return ParsedKey(kind=kind, node_id=validate_label(parts[1], field="node_id"))
        except ValidationError:
            return None
        return None
