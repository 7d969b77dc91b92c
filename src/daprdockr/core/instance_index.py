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
  are a :class:`Held`, kept per service, so a change copies one service's dict there too, not
  every record the node holds.  Because of that, a per-service
  dict that is the *same object* in two states holds the same records.  Each snapshot also has
  its place in the builder's :class:`ChangeLog` (the services each snapshot changed), so
  :func:`changed_services` tells consumers what changed between two snapshots in a look per
  change (or, between unrelated indexes, by identity: a look per service), and they redo only
  those services.
"""

from __future__ import annotations

from collections import deque
from collections.abc import ItemsView, Iterable, Iterator, Mapping, ValuesView
from typing import Generic, TypeVar

from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord

Key = tuple[ServiceName, int]
G = TypeVar("G")
K = TypeVar("K")
EMPTY: Mapping[int, InstanceRecord] = {}


class InstanceIndex(Mapping[Key, InstanceRecord]):
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

    def fill(self, outer: dict[G, dict[K, InstanceRecord]]) -> None:
        """Take ``outer`` (built by the caller, shared with nobody) as the whole content."""
        self.outer = outer
        self._own_outer = True
        self._own = set(outer)

    def delete(self, group: G, key: K) -> None:
        inner = self.outer.get(group)
        if inner is None or key not in inner:
            return
        inner = self._writable(group)
        del inner[key]
        if not inner:
            del self.outer[group]
            self._own.discard(group)


class Held(Mapping[Key, InstanceRecord]):
    """The records one node (or one lease) holds, ``(service, number) -> record``, kept per
    service: a change after a snapshot copies that service's dict and the node's small map of
    services, not every record of the node (a node of 3 holding 33 000 instances copied all of
    them per event)."""

    __slots__ = ("_len", "_own", "by_service")

    def __init__(self, by_service: dict[ServiceName, dict[int, InstanceRecord]] | None = None,
                 *, length: int = 0, owned: bool = True) -> None:
        self.by_service: dict[ServiceName, dict[int, InstanceRecord]] = by_service if by_service is not None else {}
        self._len = length
        # services whose dict this Held made or copied itself (it may change them in place)
        self._own: set[ServiceName] = set(self.by_service) if owned else set()

    def copy(self) -> Held:
        """A Held that shares every service's dict with this one, copying each on its first change."""
        return Held(dict(self.by_service), length=self._len, owned=False)

    def __getitem__(self, key: Key) -> InstanceRecord:
        return self.by_service[key[0]][key[1]]

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

    def values(self) -> ValuesView[InstanceRecord]:
        return _HeldValues(self)

    def items(self) -> ItemsView[Key, InstanceRecord]:
        return _HeldItems(self)

    def put(self, key: Key, rec: InstanceRecord) -> None:
        name = key[0]
        inner = self.by_service.get(name)
        if inner is None:
            inner = self.by_service[name] = {}
            self._own.add(name)
        elif name not in self._own:
            inner = self.by_service[name] = dict(inner)
            self._own.add(name)
        if key[1] not in inner:
            self._len += 1
        inner[key[1]] = rec

    def remove(self, key: Key) -> None:
        name = key[0]
        inner = self.by_service.get(name)
        if inner is None or key[1] not in inner:
            return
        if len(inner) == 1:
            del self.by_service[name]
            self._own.discard(name)
        else:
            if name not in self._own:
                inner = self.by_service[name] = dict(inner)
                self._own.add(name)
            del inner[key[1]]
        self._len -= 1


class _HeldValues(ValuesView[InstanceRecord]):
    _mapping: Held

    def __iter__(self) -> Iterator[InstanceRecord]:
        for inner in self._mapping.by_service.values():
            yield from inner.values()


class _HeldItems(ItemsView[Key, InstanceRecord]):
    _mapping: Held

    def __iter__(self) -> Iterator[tuple[Key, InstanceRecord]]:
        for name, inner in self._mapping.by_service.items():
            for number, rec in inner.items():
                yield (name, number), rec


class _HeldGroups(Generic[G]):
    """``group -> Held``, copy on write as :class:`_Groups`, one level deeper: a group's
    :class:`Held` is copied (its map of services) on its first change after :meth:`seal`, and a
    service's dict in it on its own first change."""

    __slots__ = ("_own", "_own_outer", "outer")

    def __init__(self) -> None:
        self.outer: dict[G, Held] = {}
        self._own_outer = True
        self._own: set[G] = set()

    def seal(self) -> None:
        self._own_outer = False
        self._own.clear()

    def _writable(self, group: G) -> Held:
        if not self._own_outer:
            self.outer = dict(self.outer)
            self._own_outer = True
        held = self.outer.get(group)
        if held is None:
            held = self.outer[group] = Held()
            self._own.add(group)
        elif group not in self._own:
            held = self.outer[group] = held.copy()
            self._own.add(group)
        return held

    def put(self, group: G, key: Key, rec: InstanceRecord) -> None:
        self._writable(group).put(key, rec)

    def fill(self, outer: dict[G, Held]) -> None:
        """Take ``outer`` (built by the caller, shared with nobody) as the whole content."""
        self.outer = outer
        self._own_outer = True
        self._own = set(outer)

    def delete(self, group: G, key: Key) -> None:
        held = self.outer.get(group)
        if held is None or key not in held:
            return
        held = self._writable(group)
        held.remove(key)
        if not held:
            del self.outer[group]
            self._own.discard(group)


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
        self._service: _Groups[ServiceName, int] = _Groups()
        self._node: _HeldGroups[str] = _HeldGroups()
        self._lease: _HeldGroups[int] = _HeldGroups()
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
        builder._node.outer = _held(index.by_node)
        builder._lease.outer = _held(index.by_lease)
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
            self._node.fill({node: _filled(held) for node, held in by_node.items()})
            self._lease.fill({lease: _filled(held) for lease, held in by_lease.items()})
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


def _filled(by_service: dict[ServiceName, dict[int, InstanceRecord]]) -> Held:
    return Held(by_service, length=sum(map(len, by_service.values())))


def _held(groups: Mapping[G, Mapping[Key, InstanceRecord]]) -> dict[G, Held]:
    """``groups`` as :class:`Held` values (shared as they are when they are already)."""
    out: dict[G, Held] = {}
    for group, held in groups.items():
        if isinstance(held, Held):
            out[group] = held
        else:
            by_service: dict[ServiceName, dict[int, InstanceRecord]] = {}
            for (name, number), rec in held.items():
                by_service.setdefault(name, {})[number] = rec
            out[group] = _filled(by_service)
    return out


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
