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
  for the services, nodes and leases an event did not touch.  A node's (and a lease's) records
  are a :class:`~daprdockr.core.index_groups.Held`, kept per service, so a change copies one
  service's dict there too, not every record the node holds (:mod:`~daprdockr.core.index_groups`).
  Because of that, a per-service dict that is the *same object* in two states holds the same
  records.  Each snapshot also has its place in the builder's :class:`ChangeLog` (the services
  each snapshot changed), so :func:`changed_services` tells consumers what changed between two
  snapshots in a look per change (or, between unrelated indexes, by identity: a look per
  service), and they redo only those services.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import TypeVar

from daprdockr.core.index_groups import Groups, HeldGroups, Key, PerService, as_held, filled
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord

K = TypeVar("K")
EMPTY: Mapping[int, InstanceRecord] = {}


class InstanceIndex(PerService):
    """``(service, number) -> record``, with per-service, per-node and per-lease views."""

    __slots__ = ("_len", "by_lease", "by_node", "by_service", "gen", "log")

    def __init__(
        self,
        *,
        by_service: Mapping[ServiceName, Mapping[int, InstanceRecord]],
        by_node: Mapping[str, Mapping[Key, InstanceRecord]],
        by_lease: Mapping[int, Mapping[Key, InstanceRecord]],
        length: int,
        log: ChangeLog | None = None,
        gen: int = 0,
    ) -> None:
        self.by_service = by_service
        self.by_node = by_node
        self.by_lease = by_lease
        self._len = length
        self.log = log if log is not None else ChangeLog()  # the builder's: what changed between its snapshots
        self.gen = gen  # this snapshot's place in ``log``

    @classmethod
    def build(cls, instances: Mapping[Key, InstanceRecord]) -> InstanceIndex:
        """A fresh index of ``instances`` (linear)."""
        if isinstance(instances, InstanceIndex):
            return instances
        builder = IndexBuilder()
        builder.load(instances.values())
        return builder.snapshot()

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


class ChangeLog:
    """The services each snapshot of one builder changed (the last :data:`LOG_LENGTH` snapshots)."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: deque[tuple[int, frozenset[ServiceName]]] = deque(maxlen=LOG_LENGTH)

    def since(self, old: int, new: int) -> set[ServiceName] | None:
        """The services changed after snapshot ``old`` up to ``new``; None if the log no longer reaches back."""
        out: set[ServiceName] = set()
        for gen, names in reversed(self.entries):
            if gen <= old:
                return out
            if gen <= new:
                out |= names
        return out if not self.entries or self.entries[0][0] <= old + 1 else None  # (gens are consecutive)


LOG_LENGTH = 4096


class IndexBuilder:
    """An :class:`InstanceIndex` kept current one record at a time (see the module docstring)."""

    __slots__ = ("_gen", "_lease", "_len", "_log", "_node", "_service", "_snapshot", "_touched")

    def __init__(self) -> None:
        self._service: Groups[ServiceName, int] = Groups()
        self._node: HeldGroups[str] = HeldGroups()
        self._lease: HeldGroups[int] = HeldGroups()
        self._len = 0
        self._snapshot: InstanceIndex | None = None
        self._log = ChangeLog()
        self._gen = 0
        self._touched: set[ServiceName] = set()  # services changed since the last snapshot

    def get(self, key: Key) -> InstanceRecord | None:
        inner = self._service.outer.get(key[0])
        return None if inner is None else inner.get(key[1])

    @classmethod
    def over(cls, index: InstanceIndex) -> IndexBuilder:
        """A builder that starts from ``index`` (shared, copied where it changes: ``index`` never does)."""
        builder = cls()
        builder._service.outer = index.by_service  # type: ignore[assignment]
        builder._node.outer = as_held(index.by_node)
        builder._lease.outer = as_held(index.by_lease)
        for groups in (builder._service, builder._node, builder._lease):
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
        self._touched.add(key[0])
        if old is not None:
            self._node.delete(old.node, key)
            self._lease.delete(old.lease, key)
        else:
            self._len += 1
        self._service.put(key[0], key[1], rec)
        self._node.put(rec.node, key, rec)
        self._lease.put(rec.lease, key, rec)

    def load(self, records: Iterable[InstanceRecord]) -> None:
        """:meth:`put` of every record; into a builder that holds none yet (a full build) the
        groups are filled in one pass, without the per-record copy-on-write bookkeeping."""
        recs = list(records)
        if self._len or not self._fill(recs):
            for rec in recs:
                self.put(rec)

    def _fill(self, recs: list[InstanceRecord]) -> bool:
        """The groups of ``recs`` at once; False (nothing changed) if two of them have one key."""
        by_service: dict[ServiceName, dict[int, InstanceRecord]] = {}
        by_node: dict[str, dict[ServiceName, dict[int, InstanceRecord]]] = {}
        by_lease: dict[int, dict[ServiceName, dict[int, InstanceRecord]]] = {}
        for rec in recs:
            name, number = rec.service, rec.number
            inner = by_service.get(name)
            if inner is None:
                inner = by_service[name] = {}
            elif number in inner:
                return False
            inner[number] = rec
            node = by_node.get(rec.node)
            if node is None:
                node = by_node[rec.node] = {}
            (node.get(name) or node.setdefault(name, {}))[number] = rec
            lease = by_lease.get(rec.lease)
            if lease is None:
                lease = by_lease[rec.lease] = {}
            (lease.get(name) or lease.setdefault(name, {}))[number] = rec
        if recs:
            self._service.fill(by_service)
            self._node.fill({node: filled(held) for node, held in by_node.items()})
            self._lease.fill({lease: filled(held) for lease, held in by_lease.items()})
            self._len = len(recs)
            self._touched.update(by_service)
            self._snapshot = None
        return True

    def delete(self, key: Key) -> None:
        old = self.get(key)
        if old is None:
            return
        self._snapshot = None
        self._touched.add(key[0])
        self._len -= 1
        self._service.delete(key[0], key[1])
        self._node.delete(old.node, key)
        self._lease.delete(old.lease, key)

    def snapshot(self) -> InstanceIndex:
        """The index as it is now; later changes copy what they touch, never change this one."""
        if self._snapshot is None:
            if self._touched:
                self._gen += 1
                self._log.entries.append((self._gen, frozenset(self._touched)))
                self._touched.clear()
            self._snapshot = InstanceIndex(by_service=self._service.outer, by_node=self._node.outer,
                                           by_lease=self._lease.outer, length=self._len, log=self._log, gen=self._gen)
            for groups in (self._service, self._node, self._lease):
                groups.seal()
        return self._snapshot


def changed_services(old: InstanceIndex, new: InstanceIndex) -> set[ServiceName]:
    """The services whose records may differ between two indexes: from the change log when both
    are snapshots of one builder (a look per change), else by identity of each service's dict
    (copy on write keeps an untouched service's dict the same object: a look per service)."""
    if old is new or old.by_service is new.by_service:
        return set()
    if old.log is new.log and old.gen <= new.gen:
        logged = new.log.since(old.gen, new.gen)
        if logged is not None:
            return logged
    return changed_keys(old.by_service, new.by_service)


def changed_keys(old: Mapping[K, object], new: Mapping[K, object]) -> set[K]:
    """The keys whose value differs between two mappings (added or gone included); values are
    compared by identity first, so mappings that share their unchanged values (copy on write)
    cost a look per key."""
    if old is new:
        return set()
    out = {key for key, value in new.items() if (was := old.get(key)) is not value and was != value}
    out.update(key for key in old if key not in new)
    return out
