"""The instance records of one state, indexed by service, node and lease.  Pure: no I/O.

:class:`InstanceIndex` is the ``instances`` mapping of a
:class:`~daprdockr.core.state.ClusterState` (``(service, number) -> record``), stored as
per-service dicts, so that a reader asks for one service's records, one node's or one lease's
without a scan of the whole cluster (client-go's Indexer, in small).

Two ways to get one:

* :meth:`InstanceIndex.build` from any mapping (a fresh build, linear);
* :class:`IndexBuilder`, which the mirror keeps current per watch event and from which it takes
  a :meth:`~IndexBuilder.snapshot` per state.  The builder copies a dict on its first change
  after a snapshot (copy on write), so a snapshot never changes afterwards and costs nothing
  for the services, nodes and leases an event did not touch.  Because of that, a per-service
  dict that is the *same object* in two states holds the same records: consumers compare them
  by identity (:func:`changed_services`) and redo only the services that changed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from daprdockr.core.model import InstanceRecord
from daprdockr.core.names import ServiceName

Key = tuple[ServiceName, int]
G = TypeVar("G")
K = TypeVar("K")
EMPTY: Mapping[int, InstanceRecord] = {}


class InstanceIndex(Mapping[Key, InstanceRecord]):
    """``(service, number) -> record``, with per-service, per-node and per-lease views."""

    __slots__ = ("_len", "by_lease", "by_node", "by_service")

    def __init__(
        self,
        *,
        by_service: Mapping[ServiceName, Mapping[int, InstanceRecord]],
        by_node: Mapping[str, Mapping[Key, InstanceRecord]],
        by_lease: Mapping[int, Mapping[Key, InstanceRecord]],
        length: int,
    ) -> None:
        self.by_service = by_service
        self.by_node = by_node
        self.by_lease = by_lease
        self._len = length

    @classmethod
    def build(cls, instances: Mapping[Key, InstanceRecord]) -> InstanceIndex:
        """A fresh index of ``instances`` (linear)."""
        if isinstance(instances, InstanceIndex):
            return instances
        builder = IndexBuilder()
        for rec in instances.values():
            builder.put(rec)
        return builder.snapshot()

    def __getitem__(self, key: Key) -> InstanceRecord:
        return self.by_service[key[0]][key[1]]

    def get(self, key: Key, default: InstanceRecord | None = None) -> InstanceRecord | None:  # type: ignore[override]
        inner = self.by_service.get(key[0])
        return default if inner is None else inner.get(key[1], default)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        inner = self.by_service.get(key[0])
        return inner is not None and key[1] in inner

    def __iter__(self) -> Iterator[Key]:
        for name, inner in self.by_service.items():
            for number in inner:
                yield (name, number)

    def __len__(self) -> int:
        return self._len

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (dict(self.by_service),))

    def of_service(self, name: ServiceName) -> Mapping[int, InstanceRecord]:
        return self.by_service.get(name, EMPTY)

    def of_node(self, node: str) -> Mapping[Key, InstanceRecord]:
        return self.by_node.get(node, {})

    def of_lease(self, lease: int) -> Mapping[Key, InstanceRecord]:
        return self.by_lease.get(lease, {})

    def held_by(self, node: str) -> int:
        return len(self.by_node.get(node, ()))


def _rebuild(by_service: Mapping[ServiceName, Mapping[int, InstanceRecord]]) -> InstanceIndex:
    builder = IndexBuilder()
    for inner in by_service.values():
        for rec in inner.values():
            builder.put(rec)
    return builder.snapshot()


class _Groups(Generic[G, K]):
    """``group -> {key: record}``, copy on write: a group's dict is copied on its first change
    after :meth:`seal`, and the outer dict too."""

    __slots__ = ("_own", "_own_outer", "outer")

    def __init__(self) -> None:
        self.outer: dict[G, dict[K, InstanceRecord]] = {}
        self._own_outer = True
        self._own: set[G] = set()  # groups whose dict was copied since the last seal

    def seal(self) -> None:
        self._own_outer = False
        self._own.clear()

    def _writable(self, group: G) -> dict[K, InstanceRecord]:
        if not self._own_outer:
            self.outer = dict(self.outer)
            self._own_outer = True
        inner = self.outer.get(group)
        if inner is None:
            inner = self.outer[group] = {}
            self._own.add(group)
        elif group not in self._own:
            inner = self.outer[group] = dict(inner)
            self._own.add(group)
        return inner

    def put(self, group: G, key: K, rec: InstanceRecord) -> None:
        self._writable(group)[key] = rec

    def delete(self, group: G, key: K) -> None:
        inner = self.outer.get(group)
        if inner is None or key not in inner:
            return
        inner = self._writable(group)
        del inner[key]
        if not inner:
            del self.outer[group]
            self._own.discard(group)


class IndexBuilder:
    """An :class:`InstanceIndex` kept current one record at a time (see the module docstring)."""

    __slots__ = ("_lease", "_len", "_node", "_service", "_snapshot")

    def __init__(self) -> None:
        self._service: _Groups[ServiceName, int] = _Groups()
        self._node: _Groups[str, Key] = _Groups()
        self._lease: _Groups[int, Key] = _Groups()
        self._len = 0
        self._snapshot: InstanceIndex | None = None

    def get(self, key: Key) -> InstanceRecord | None:
        inner = self._service.outer.get(key[0])
        return None if inner is None else inner.get(key[1])

    @classmethod
    def over(cls, index: InstanceIndex) -> IndexBuilder:
        """A builder that starts from ``index`` (shared, copied where it changes: ``index`` never does)."""
        builder = cls()
        for groups, outer in ((builder._service, index.by_service), (builder._node, index.by_node),
                              (builder._lease, index.by_lease)):
            groups.outer = outer  # type: ignore[assignment]
            groups.seal()
        builder._len = len(index)
        builder._snapshot = index
        return builder

    def of_service(self, name: ServiceName) -> Mapping[int, InstanceRecord]:
        """``name``'s records now (read only: it may change with the next put or delete)."""
        return self._service.outer.get(name, EMPTY)

    def put(self, rec: InstanceRecord) -> None:
        key = rec.key_tuple
        old = self.get(key)
        if old is rec:
            return
        self._snapshot = None
        if old is not None:
            self._node.delete(old.node, key)
            self._lease.delete(old.lease, key)
        else:
            self._len += 1
        self._service.put(key[0], key[1], rec)
        self._node.put(rec.node, key, rec)
        self._lease.put(rec.lease, key, rec)

    def delete(self, key: Key) -> None:
        old = self.get(key)
        if old is None:
            return
        self._snapshot = None
        self._len -= 1
        self._service.delete(key[0], key[1])
        self._node.delete(old.node, key)
        self._lease.delete(old.lease, key)

    def snapshot(self) -> InstanceIndex:
        """The index as it is now; later changes copy what they touch, never change this one."""
        if self._snapshot is None:
            self._snapshot = InstanceIndex(by_service=self._service.outer, by_node=self._node.outer,
                                           by_lease=self._lease.outer, length=self._len)
            for groups in (self._service, self._node, self._lease):
                groups.seal()
        return self._snapshot


def changed_services(
    old: Mapping[ServiceName, Mapping[int, InstanceRecord]], new: Mapping[ServiceName, Mapping[int, InstanceRecord]]
) -> set[ServiceName]:
    """The services whose records differ between two indexes' ``by_service``: compared by identity
    (copy on write keeps an untouched service's dict the same object), so it costs a look per
    service, not per instance."""
    if old is new:
        return set()
    out = {name for name, inner in new.items() if old.get(name) is not inner}
    out.update(name for name in old if name not in new)
    return out
