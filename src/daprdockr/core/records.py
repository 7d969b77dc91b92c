"""Records of current state, with strict parsing from JSON-shaped dicts.

* :class:`InstanceRecord` current state of one instance number (``instances/<g>/<s>/<n>``),
  written by the agent that won the race for it, bound to that agent's lease.
* :class:`NodeRecord`    a live agent (``nodes/<id>``), bound to its lease: the heartbeat.

Both are frozen dataclasses.  ``from_dict`` refuses bad values with a
:class:`~daprdockr.errors.ValidationError` naming the field; ``to_dict`` gives canonical JSON-able
data.  The desired state they follow is :class:`~daprdockr.core.model.ServiceSpec`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from daprdockr.core.jsondata import check_count, reject_unknown, require_mapping
from daprdockr.core.model import MAX_PORTS, PortSpec
from daprdockr.core.names import ServiceName, validate_label, validate_port
from daprdockr.errors import ValidationError

# "paused": its container is paused (docker pause); agents before it read such a record as malformed,
# which to them is a taken number that is not served: the same thing.
InstanceState = Literal["claimed", "starting", "running", "failed", "stopping", "paused"]
INSTANCE_STATES: tuple[InstanceState, ...] = ("claimed", "starting", "running", "failed", "stopping", "paused")
DOCKER_RUNTIME = "docker"  # a node's container runtime (NodeRecord.runtime)
HOLLOW_RUNTIME = "hollow"  # containers kept in the agent's memory: a test node (``--runtime hollow``)
Health = Literal["", "starting", "healthy", "unhealthy"]  # "": the service has no health check
HEALTH_STATES: tuple[Health, ...] = ("", "starting", "healthy", "unhealthy")


@functools.lru_cache(maxsize=1 << 12)
def _check_port_key(key: str) -> None:
    """A record's published-port key is ``<port>/<proto>`` (checked once per distinct key: every
    record of a service repeats them).  Raises ValidationError."""
    PortSpec.parse(key, field="ports")


@functools.lru_cache(maxsize=1 << 12)
def _node_label(value: str) -> str:
    """A record's ``node``, checked once per distinct name (every node's records repeat it)."""
    return validate_label(value, field="node")


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """Current state of instance ``number`` of ``service``: which node runs it and where.

    ``ports`` maps ``"<container port>/<proto>"`` to the host port published on ``address``.
    """

    service: ServiceName
    number: int
    node: str
    address: str
    state: InstanceState = "claimed"
    ports: tuple[tuple[str, int], ...] = ()
    container_id: str = ""
    spec_hash: str = ""
    since: float = 0.0
    error: str = ""
    health: Health = ""
    lease: int = field(default=0, compare=False)
    create_revision: int = field(default=0, compare=False)
    mod_revision: int = field(default=0, compare=False)  # the etcd revision of its last write

    FIELDS = frozenset(
        {"node", "address", "state", "ports", "container_id", "spec_hash", "since", "error", "health"}
    )

    @property
    def routable(self) -> bool:
        """Served by DNS and nginx: running, and healthy when the service has a health check."""
        return self.state == "running" and self.health in ("", "healthy")

    @property
    def key_tuple(self) -> tuple[ServiceName, int]:
        return (self.service, self.number)

    def port_for(self, container_port: int, proto: str = "tcp") -> int | None:
        return dict(self.ports).get(f"{container_port}/{proto}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "address": self.address,
            "state": self.state,
            "ports": dict(self.ports),
            "container_id": self.container_id,
            "spec_hash": self.spec_hash,
            "since": self.since,
            "error": self.error,
            **({"health": self.health} if self.health else {}),
        }

    @classmethod
    def from_dict(
        cls, data: object, *, service: ServiceName, number: int, lease: int = 0, create_revision: int = 0,
        mod_revision: int = 0,
    ) -> InstanceRecord:
        d = require_mapping(data, what="instance record")
        reject_unknown(d, cls.FIELDS, what="instance record")
        node = d.get("node")
        node = _node_label(node) if type(node) is str else validate_label(node, field="node")
        address = d.get("address")
        if not isinstance(address, str) or not address:
            raise ValidationError("must be a non-empty string", field="address")
        state = d.get("state", "claimed")
        if state not in INSTANCE_STATES:
            raise ValidationError(f"{state!r} is not one of {INSTANCE_STATES}", field="state")
        ports_raw = d.get("ports") or {}
        if not isinstance(ports_raw, Mapping):
            raise ValidationError("must be an object", field="ports")
        check_count(ports_raw, MAX_PORTS + 1, field="ports")  # the extra ports and http_port
        ports = []
        for k, v in ports_raw.items():
            _check_port_key(k)
            ports.append((str(k), validate_port(v, field="ports")))
        since = d.get("since", 0.0)
        if isinstance(since, bool) or not isinstance(since, int | float):
            raise ValidationError("must be a number", field="since")
        health = d.get("health", "")
        if health not in HEALTH_STATES:
            raise ValidationError(f"{health!r} is not one of {HEALTH_STATES}", field="health")
        return cls(
            service=service,
            number=number,
            node=node,
            address=address,
            state=state,
            ports=tuple(sorted(ports)),
            container_id=str(d.get("container_id", "")),
            spec_hash=str(d.get("spec_hash", "")),
            since=float(since),
            error=str(d.get("error", "")),
            health=health,
            lease=lease,
            create_revision=create_revision,
            mod_revision=mod_revision,
        )


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A live agent.  Its key lives on the agent's lease, so it vanishes when the agent dies."""

    node_id: str
    address: str
    capacity: int = 0  # 0 = unlimited
    started_at: float = 0.0
    dns: str = ""
    http: str = ""
    api: str = ""
    runtime: str = DOCKER_RUNTIME  # "hollow": a test node whose containers exist only in its memory
    compacts: bool = True  # False: started with --compact-interval 0 (never the node that compacts etcd)
    lease: int = field(default=0, compare=False)
    create_revision: int = field(default=0, compare=False)  # when the node (last) joined

    # The fields read.  "instances" was written by earlier versions (a count per change of this
    # node's instances, echoed to every agent); still accepted, never written: readers count
    # instance keys instead.  Fields beyond these are ignored: a node record is written by agents
    # only, never by hand, and a newer agent's field must not make this one skip the node (agents
    # before "runtime" do skip a hollow node's record).  "runtime" is written only when it is not
    # "docker", so a Docker node's record reads the same to agents from before it; "compacts" only
    # when false, for the same reason.
    FIELDS = frozenset({"node_id", "address", "instances", "capacity", "started_at", "dns", "http", "api",
                        "runtime", "compacts"})

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "node_id": self.node_id,
            "address": self.address,
            "capacity": self.capacity,
            "started_at": self.started_at,
            "dns": self.dns,
            "http": self.http,
            "api": self.api,
        }
        if self.runtime != DOCKER_RUNTIME:
            data["runtime"] = self.runtime
        if not self.compacts:
            data["compacts"] = False
        return data

    @classmethod
    def from_dict(cls, data: object, *, node_id: str, lease: int = 0) -> NodeRecord:
        d = require_mapping(data, what="node record")
        if d.get("node_id", node_id) != node_id:
            raise ValidationError("does not match the key", field="node_id")
        address = d.get("address")
        if not isinstance(address, str) or not address:
            raise ValidationError("must be a non-empty string", field="address")
        numbers = {}
        for name in ("instances", "capacity"):  # "instances": legacy, validated and dropped
            v = d.get(name, 0)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValidationError("must be a non-negative integer", field=name)
            numbers[name] = v
        started = d.get("started_at", 0.0)
        if isinstance(started, bool) or not isinstance(started, int | float):
            raise ValidationError("must be a number", field="started_at")
        runtime = d.get("runtime", DOCKER_RUNTIME)
        if not isinstance(runtime, str) or not 0 < len(runtime) <= 32:
            raise ValidationError("must be a short non-empty string", field="runtime")
        compacts = d.get("compacts", True)
        if not isinstance(compacts, bool):
            raise ValidationError("must be true or false", field="compacts")
        return cls(
            node_id=validate_label(node_id, field="node_id"),
            address=address,
            capacity=numbers["capacity"],
            started_at=float(started),
            dns=str(d.get("dns", "")),
            http=str(d.get("http", "")),
            api=str(d.get("api", "")),
            runtime=runtime,
            compacts=compacts,
            lease=lease,
        )
