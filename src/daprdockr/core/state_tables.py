"""The parts of a :class:`~daprdockr.core.state.ClusterState`, kept current one key at a time.  Pure.

:class:`StateTables` is what :func:`~daprdockr.core.state.assemble_state` builds in one pass,
updated per key instead: :meth:`StateTables.replace_key` takes a key's old and new decoded value, takes
the old one's part out and puts the new one's in, and recomputes the per-service facts it
touched (the frozen route, the unowned numbers).  :meth:`StateTables.snapshot` hands out a
state that shares the tables' dicts; every dict is copied on its first change after a
snapshot (copy on write), so a snapshot never changes, and an event costs in proportion to
the keys it touched, not to the size of the cluster.  The mirror's property tests check the
result against a fresh :func:`~daprdockr.core.state.assemble_state` after random events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

from daprdockr.core.instance_index import IndexBuilder
from daprdockr.core.keys import KeySchema, ParsedKey
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord, NodeRecord
from daprdockr.core.rollout import HistoryEntry, RolloutRecord, Slot
from daprdockr.core.state import (
    Applied,
    BadKey,
    ClusterState,
    Decoded,
    Keyed,
    Marker,
    RawKV,
    bad_instance,
    route_of,
    unowned_numbers,
)

K = TypeVar("K")
V = TypeVar("V")
Key = tuple[ServiceName, int]


class _Cow(Generic[K, V]):
    """A dict copied on its first change after :meth:`seal` (a snapshot shares it)."""

    __slots__ = ("_own", "d")

    def __init__(self) -> None:
        self.d: dict[K, V] = {}
        self._own = True

    def seal(self) -> dict[K, V]:
        self._own = False
        return self.d

    def _w(self) -> dict[K, V]:
        if not self._own:
            self.d = dict(self.d)
            self._own = True
        return self.d

    def put(self, key: K, value: V) -> None:
        if self.d.get(key) is not value:
            self._w()[key] = value

    def pop(self, key: K) -> None:
        if key in self.d:
            del self._w()[key]


class StateTables:
    def __init__(self, *, schema: KeySchema) -> None:
        self.schema = schema
        self.services: _Cow[ServiceName, ServiceSpec] = _Cow()
        self.invalid_services: _Cow[ServiceName, str] = _Cow()
        self.instances = IndexBuilder()
        self.invalid_instances: _Cow[Key, BadKey] = _Cow()
        self.nodes: _Cow[str, NodeRecord] = _Cow()
        self.applied: _Cow[str, int] = _Cow()
        self.rollouts: _Cow[ServiceName, RolloutRecord] = _Cow()
        self.slots: _Cow[ServiceName, dict[int, Slot]] = _Cow()
        self.history: _Cow[ServiceName, dict[int, HistoryEntry]] = _Cow()
        self.frozen_routes: _Cow[ServiceName, tuple[str, int]] = _Cow()
        self.unowned: _Cow[ServiceName, tuple[int, ...]] = _Cow()
        self.draining: set[str] = set()
        self.skipped: dict[str, str] = {}
        self._free: dict[ServiceName, set[int]] = {}  # the unowned numbers, per service that has any
        self._cached: ClusterState | None = None

    def replace_key(self, kv: RawKV, old: Decoded | str | None, new: Decoded | str | None,
            *, last_good: Mapping[str, ServiceSpec], refresh: bool = True) -> None:
        """Replace ``kv.key``'s part: ``old`` (its previous decoded value, None if absent) by ``new``
        (None: deleted).  ``refresh=False`` (a bulk load) leaves the per-service facts to one
        :meth:`refresh_all` at the end; the key is then parsed only for a malformed value (a
        decoded one tells where it goes)."""
        self._cached = None
        parsed = self.schema.parse(kv.key) if refresh or isinstance(old, str) or isinstance(new, str) else None
        if old is not None:
            self._remove(kv.key, old, parsed)
        if new is not None:
            self._add(kv, new, parsed, last_good)
        if parsed is not None and parsed.service is not None and refresh:
            if parsed.kind == "instance":
                self._refresh_number(parsed.service, parsed.number)
            elif parsed.kind in ("service", "history"):
                self._refresh(parsed.service)

    def refresh_all(self) -> None:
        for name in set(self.services.d) | set(self.invalid_services.d) | set(self._free):
            self._refresh(name)

    def _remove(self, key: str, old: Decoded | str, parsed: ParsedKey | None) -> None:
        if isinstance(old, str):
            self.skipped.pop(key, None)
            if parsed is not None and parsed.service is not None:
                if parsed.kind == "service":
                    self.invalid_services.pop(parsed.service)
                    self.services.pop(parsed.service)
                elif parsed.kind == "instance":
                    self.invalid_instances.pop((parsed.service, parsed.number))
        elif isinstance(old, ServiceSpec):
            self.services.pop(old.name)
        elif isinstance(old, InstanceRecord):
            self.instances.delete(old.key_tuple)
        elif isinstance(old, Applied):
            self.applied.pop(old.node_id)
        elif isinstance(old, Marker):
            self.draining.discard(old.node_id)
        elif isinstance(old, Keyed):
            self._remove_keyed(old)
        else:
            self.nodes.pop(old.node_id)

    def _remove_keyed(self, old: Keyed) -> None:
        if isinstance(old.value, RolloutRecord):
            self.rollouts.pop(old.service)
            return
        table: _Cow[ServiceName, dict[int, Slot]] | _Cow[ServiceName, dict[int, HistoryEntry]]
        table, number = (self.slots, old.number) if isinstance(old.value, Slot) else (self.history, old.value.version)
        inner = table.d.get(old.service)
        if inner is not None and number in inner:
            rest = {n: v for n, v in inner.items() if n != number}
            if rest:
                table.put(old.service, rest)  # type: ignore[arg-type]
            else:
                table.pop(old.service)

    def _add(self, kv: RawKV, new: Decoded | str, parsed: ParsedKey | None,
             last_good: Mapping[str, ServiceSpec]) -> None:
        if isinstance(new, str):
            self.skipped[kv.key] = new
            if parsed is None or parsed.service is None:
                return
            if parsed.kind == "service":
                self.invalid_services.put(parsed.service, new)
                good = last_good.get(kv.key)
                if good is not None:
                    self.services.put(good.name, good)
            elif parsed.kind == "instance":
                self.invalid_instances.put((parsed.service, parsed.number), bad_instance(kv, new))
        elif isinstance(new, ServiceSpec):
            self.services.put(new.name, new)
        elif isinstance(new, InstanceRecord):
            self.instances.put(new)
        elif isinstance(new, Applied):
            self.applied.put(new.node_id, new.revision)
        elif isinstance(new, Marker):
            self.draining.add(new.node_id)
        elif isinstance(new, Keyed):
            self._add_keyed(new)
        else:
            self.nodes.put(new.node_id, new)

    def _add_keyed(self, new: Keyed) -> None:
        if isinstance(new.value, RolloutRecord):
            self.rollouts.put(new.service, new.value)
        elif isinstance(new.value, Slot):
            self.slots.put(new.service, {**self.slots.d.get(new.service, {}), new.number: new.value})
        else:
            self.history.put(new.service, {**self.history.d.get(new.service, {}), new.value.version: new.value})

    def _refresh(self, name: ServiceName) -> None:
        """The derived per-service facts of ``name``: its frozen route and its unowned numbers."""
        route = None
        history = self.history.d.get(name)
        if name in self.invalid_services.d and name not in self.services.d and history:
            route = route_of(name, history[max(history)])
        if route is None:
            self.frozen_routes.pop(name)
        else:
            self.frozen_routes.put(name, route)
        spec = self.services.d.get(name)
        self._free[name] = free = set(unowned_numbers(spec, self.instances.of_service(name), self.invalid_instances.d)
                                      if spec is not None else ())
        self._publish_free(name, free)

    def _refresh_number(self, name: ServiceName, number: int) -> None:
        """One instance key of ``name`` changed: is ``number`` unowned now?"""
        spec = self.services.d.get(name)
        if spec is None or number > spec.instances:
            return
        free = self._free.setdefault(name, set())
        taken = self.instances.get((name, number)) is not None or (name, number) in self.invalid_instances.d
        if taken == (number in free):
            if taken:
                free.discard(number)
            else:
                free.add(number)
            self._publish_free(name, free)

    def _publish_free(self, name: ServiceName, free: set[int]) -> None:
        if free:
            self.unowned.put(name, tuple(sorted(free)))
        else:
            self.unowned.pop(name)
            self._free.pop(name, None)

    def snapshot(self, *, revision: int) -> ClusterState:
        """The state as it is now (shares the tables' dicts until their next change)."""
        if self._cached is not None and self._cached.revision == revision:
            return self._cached
        state = ClusterState(
            services=self.services.seal(), instances=self.instances.snapshot(), nodes=self.nodes.seal(),
            revision=revision, skipped=tuple(sorted(self.skipped.items())),
            invalid_services=self.invalid_services.seal(), invalid_instances=self.invalid_instances.seal(),
            applied=self.applied.seal(), rollouts=self.rollouts.seal(), slots=self.slots.seal(),
            draining=frozenset(self.draining), history=self.history.seal(), frozen_routes=self.frozen_routes.seal(),
        )
        object.__setattr__(state, "_unowned", self.unowned.seal())
        self._cached = state
        return state
