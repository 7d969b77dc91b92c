"""What the agent knows about its own containers, and how they are labelled and named.

A managed container carries the labels below; an agent only ever touches containers whose
``daprdockr.node`` label is its own node id.  :class:`ContainerInfo` is the runtime adapter's
view of one such container, as a plain record so the planner can stay pure;
:class:`LocalContainers` is one listing of them, indexed by service once per listing (so a
watch event about one service looks at that service's containers, not at all of them).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import overload

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


def container_labels(*, node_id: str, service: ServiceName, number: int, spec_hash: str) -> dict[str, str]:
    """The labels that make a container one instance of a service on one node."""
    return {LABEL_SERVICE: service.service, LABEL_GROUP: service.group, LABEL_INSTANCE: str(number),
            LABEL_NODE: node_id, LABEL_SPEC_HASH: spec_hash}


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


class LocalContainers(Sequence[ContainerInfo]):
    """One listing of this node's containers (a read-only sequence), indexed by service.

    Built when the listing changes (a Docker event, a start), never per watch event; equal
    listings compare equal, the same one by identity first."""

    __slots__ = ("_items", "by_id", "by_service")

    def __init__(self, containers: Iterable[ContainerInfo] = ()) -> None:
        self._items = tuple(containers)
        by_service: dict[ServiceName, list[ContainerInfo]] = {}
        for c in self._items:
            by_service.setdefault(c.service, []).append(c)
        self.by_service: Mapping[ServiceName, tuple[ContainerInfo, ...]] = {
            name: tuple(group) for name, group in by_service.items()}
        self.by_id: Mapping[str, ContainerInfo] = {c.id: c for c in self._items}

    @overload
    def __getitem__(self, index: int) -> ContainerInfo: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[ContainerInfo]: ...

    def __getitem__(self, index: int | slice) -> ContainerInfo | Sequence[ContainerInfo]:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[ContainerInfo]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if isinstance(other, LocalContainers):
            return self._items == other._items
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"LocalContainers({list(self._items)!r})"

    def of(self, services: Iterable[ServiceName]) -> list[ContainerInfo]:
        """The containers of ``services``, in listing order within each service."""
        return [c for name in services for c in self.by_service.get(name, ())]
