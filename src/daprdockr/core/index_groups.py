"""The groups an :class:`~daprdockr.core.instance_index.IndexBuilder` keeps, copy on write.  Pure.

:class:`PerService` is a ``(service, number) -> record`` mapping stored as per-service dicts (the
index itself, and :class:`Held`: the records of one node or one lease).  :class:`Groups` and
:class:`HeldGroups` map a group (a service; a node or a lease) to its records and copy a group
on its first change after :meth:`~Groups.seal`, so a snapshot shared before never changes and a
change costs a copy of what it touches: one service's dict, never every record a node holds.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, Mapping, ValuesView
from typing import Generic, TypeVar

from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord

Key = tuple[ServiceName, int]
G = TypeVar("G")
K = TypeVar("K")


class PerService(Mapping[Key, InstanceRecord]):
    """A ``(service, number) -> record`` mapping read from ``by_service`` (set by the subclass)."""

    __slots__ = ()
    by_service: Mapping[ServiceName, Mapping[int, InstanceRecord]]

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

    def values(self) -> ValuesView[InstanceRecord]:
        return _Values(self)

    def items(self) -> ItemsView[Key, InstanceRecord]:
        return _Items(self)


class _Values(ValuesView[InstanceRecord]):
    _mapping: PerService

    def __iter__(self) -> Iterator[InstanceRecord]:
        for inner in self._mapping.by_service.values():
            yield from inner.values()


class _Items(ItemsView[Key, InstanceRecord]):
    _mapping: PerService

    def __iter__(self) -> Iterator[tuple[Key, InstanceRecord]]:
        for name, inner in self._mapping.by_service.items():
            for number, rec in inner.items():
                yield (name, number), rec


class Groups(Generic[G, K]):
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


class Held(PerService):
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

    def __len__(self) -> int:
        return self._len

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


class HeldGroups(Generic[G]):
    """``group -> Held``, copy on write as :class:`Groups`, one level deeper: a group's
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


def filled(by_service: dict[ServiceName, dict[int, InstanceRecord]]) -> Held:
    return Held(by_service, length=sum(map(len, by_service.values())))


def as_held(groups: Mapping[G, Mapping[Key, InstanceRecord]]) -> dict[G, Held]:
    """``groups`` as :class:`Held` values (shared as they are when they are already)."""
    out: dict[G, Held] = {}
    for group, held in groups.items():
        if isinstance(held, Held):
            out[group] = held
        else:
            by_service: dict[ServiceName, dict[int, InstanceRecord]] = {}
            for (name, number), rec in held.items():
                by_service.setdefault(name, {})[number] = rec
            out[group] = filled(by_service)
    return out
