"""What the agent knows about its own containers, and how they are labelled and named.

A managed container carries the labels below; an agent only ever touches containers whose
``daprdockr.node`` label is its own node id.  :class:`ContainerInfo` is the runtime adapter's
view of one such container, as a plain record so the planner can stay pure;
:class:`LocalContainers` is one listing of them, indexed by service, and kept per service as
containers start (so a watch event or a start about one service looks at that service's
containers, not at all of them).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
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
    # seconds its last run lasted by the engine's own clock (``State.FinishedAt - StartedAt``) once
    # it exited; ``None`` while it runs, and in Docker's listings (an inspect reads it)
    ran_for: float | None = None

    @property
    def serving(self) -> bool:
        """Running and not paused: what DNS, nginx and health checks may use."""
        return self.running and not self.paused

    @property
    def key(self) -> tuple[ServiceName, int]:
        return (self.service, self.number)


class LocalContainers(Sequence[ContainerInfo]):
    """This node's containers (a read-only sequence, in service order), indexed by service.

    Built from a listing (a Docker event, the periodic relist), or from the last one with one
    container put in (:meth:`put`: a start) or a selection of it (:meth:`filtered`): a service's
    group is a tuple shared with the object it came from while it did not change, so comparing two
    of them (:func:`~daprdockr.core.instance_index.changed_keys` on ``by_service``) costs a look
    per service, and a start costs the copy of two dicts, not a walk of every container.  Equal
    when their groups are equal (the order of the services does not matter)."""

    __slots__ = ("_by_id", "_items", "by_service")

    def __init__(self, containers: Iterable[ContainerInfo] = (), *, like: LocalContainers | None = None) -> None:
        """Index ``containers``; with ``like``, a group equal to ``like``'s is ``like``'s own tuple."""
        by_service: dict[ServiceName, list[ContainerInfo]] = {}
        for c in containers:
            by_service.setdefault(c.service, []).append(c)
        groups = {name: tuple(group) for name, group in by_service.items()}
        if like is not None:
            for name, group in groups.items():
                was = like.by_service.get(name)
                if was is not None and was == group:
                    groups[name] = was
        self.by_service: Mapping[ServiceName, tuple[ContainerInfo, ...]] = groups
        self._items: tuple[ContainerInfo, ...] | None = None
        self._by_id: dict[str, ContainerInfo] | None = None

    @classmethod
    def _of(cls, groups: dict[ServiceName, tuple[ContainerInfo, ...]],
            by_id: dict[str, ContainerInfo] | None = None) -> LocalContainers:
        out = cls.__new__(cls)
        out.by_service, out._items, out._by_id = groups, None, by_id
        return out

    @property
    def items(self) -> tuple[ContainerInfo, ...]:
        if self._items is None:
            self._items = tuple(c for group in self.by_service.values() for c in group)
        return self._items

    @property
    def by_id(self) -> Mapping[str, ContainerInfo]:
        if self._by_id is None:
            self._by_id = {c.id: c for group in self.by_service.values() for c in group}
        return self._by_id

    def put(self, info: ContainerInfo) -> LocalContainers:
        """These containers with ``info`` in place of the container of its id (or added last in
        its service); every other service's group is shared."""
        groups = dict(self.by_service)
        old = groups.get(info.service, ())
        groups[info.service] = (*(c for c in old if c.id != info.id), info)
        by_id = None
        if self._by_id is not None:
            by_id = dict(self._by_id)
            by_id[info.id] = info
        return LocalContainers._of(groups, by_id)

    def filtered(self, keep: Callable[[ContainerInfo], bool], *,
                 since: tuple[LocalContainers, LocalContainers] | None = None,
                 touched: Collection[ServiceName] = ()) -> LocalContainers:
        """The containers ``keep`` accepts.  With ``since`` (an earlier source and what this
        filter made of it), a service whose group is the same tuple as the source's and is not
        in ``touched`` (where ``keep``'s answer may have changed) keeps its earlier result
        without a look; a result equal to the earlier one is the earlier tuple."""
        last_src, last_out = since if since is not None else (None, None)
        groups: dict[ServiceName, tuple[ContainerInfo, ...]] = {}
        for name, group in self.by_service.items():
            was = last_out.by_service.get(name) if last_out is not None else None
            if last_src is not None and name not in touched and last_src.by_service.get(name) is group:
                if was:
                    groups[name] = was
                continue
            kept = tuple(c for c in group if keep(c))
            if len(kept) == len(group):
                kept = group  # (all of it: the same tuple)
            if kept:
                groups[name] = was if was is not None and was == kept else kept
        return LocalContainers._of(groups)

    @overload
    def __getitem__(self, index: int) -> ContainerInfo: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[ContainerInfo]: ...

    def __getitem__(self, index: int | slice) -> ContainerInfo | Sequence[ContainerInfo]:
        return self.items[index]

    def __len__(self) -> int:
        return sum(len(group) for group in self.by_service.values())

    def __iter__(self) -> Iterator[ContainerInfo]:
        return (c for group in self.by_service.values() for c in group)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if isinstance(other, LocalContainers):
            return self.by_service == other.by_service
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self.by_service.items()))

    def __repr__(self) -> str:
        return f"LocalContainers({list(self)!r})"

    def of(self, services: Iterable[ServiceName]) -> list[ContainerInfo]:
        """The containers of ``services``, in listing order within each service."""
        return [c for name in services for c in self.by_service.get(name, ())]
