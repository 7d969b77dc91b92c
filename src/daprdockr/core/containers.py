"""What the agent knows about its own containers, and how they are labelled and named.

A managed container carries the labels below; an agent only ever touches containers whose
``daprdockr.node`` label is its own node id.  :class:`ContainerInfo` is the runtime adapter's
view of one such container, as a plain record so the planner can stay pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from daprdockr.core.names import ServiceName

LABEL_SERVICE = "daprdockr.service"
LABEL_GROUP = "daprdockr.group"
LABEL_INSTANCE = "daprdockr.instance"
LABEL_NODE = "daprdockr.node"
LABEL_SPEC_HASH = "daprdockr.spec-hash"


def container_name(*, node_id: str, service: ServiceName, number: int) -> str:
    """Unique per (node, service, instance) on a shared engine: ``daprdockr.<node>.<svc>.<grp>.<n>``.
    A container of the instance that Docker cannot remove keeps this name; its replacement gets
    ``<name>.<6 hex digits>`` (the labels, not the name, say which instance a container is)."""
    return f"daprdockr.{node_id}.{service.service}.{service.group}.{number}"


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """One labelled container on this node's engine."""

    id: str
    service: ServiceName
    number: int
    node: str
    spec_hash: str
    running: bool  # its processes exist (running or paused)
    ports: tuple[tuple[str, int], ...] = ()  # "9000/tcp" -> published host port
    created: float = 0.0
    paused: bool = False  # frozen by ``docker pause``: kept, never restarted for it, not served
    doomed: bool = False  # Docker lists it ``dead`` or ``removing``: a removal failed or is under way

    @property
    def serving(self) -> bool:
        """Running and not paused: what DNS, nginx and health checks may use."""
        return self.running and not self.paused

    @property
    def key(self) -> tuple[ServiceName, int]:
        return (self.service, self.number)
