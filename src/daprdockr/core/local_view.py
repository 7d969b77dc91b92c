"""What this node's DNS and nginx serve: etcd's records, corrected by local knowledge.

etcd can lag (an outage, a write still in flight), but an agent always knows its own containers
from its own Docker engine.  :func:`local_view` therefore takes every record etcd has, and for
the records of *this* node's instances trusts the engine instead: an instance whose container is
not running (it crashed, or the agent is stopping it) is left out at once, and one whose
container was restarted is served on the container's current ports.  When an instance has two
containers (a rolling update starts the replacement beside the old one), the one the record names
is served.  Pure; linear in the number of this node's records (the state's per-node index),
and the records it corrects are copied into a new index that shares every other service's.
:class:`LocalView` keeps the corrections per service and works out again only those of the
services whose records or containers changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from daprdockr.core.containers import ContainerInfo, LocalContainers
from daprdockr.core.instance_index import IndexBuilder, InstanceIndex, changed_keys, changed_services
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from daprdockr.core.state import ClusterState

Key = tuple[ServiceName, int]


def corrections(
    mine: Mapping[Key, InstanceRecord], routable: Iterable[ContainerInfo]
) -> dict[Key, InstanceRecord | None]:
    """What this node's ``routable`` containers change in its records ``mine``: a record to serve
    instead (restarted under it: other ports), or None (not running here: left out)."""
    live: dict[Key, list[ContainerInfo]] = {}
    for c in routable:
        live.setdefault(c.key, []).append(c)
    out: dict[Key, InstanceRecord | None] = {}
    for key, rec in mine.items():
        if rec.state != "running":
            continue
        candidates = live.get(key, [])
        # the container the record names; else (restarted under it) the newest.  A replacement
        # starting beside it (rolling update) is not served before the record names it.
        named = [x for x in candidates if x.id == rec.container_id]
        chosen = named[0] if named else max(candidates, key=lambda x: x.created, default=None)
        if chosen is None:
            out[key] = None
        elif chosen.id != rec.container_id or chosen.ports != rec.ports:
            out[key] = replace(rec, container_id=chosen.id, ports=chosen.ports)
    return out


def _corrected(state: ClusterState, fixes: Mapping[Key, InstanceRecord | None]) -> ClusterState:
    if not fixes:
        return state
    builder = IndexBuilder.over(state.index)
    for key, rec in fixes.items():
        if rec is None:
            builder.delete(key)
        else:
            builder.put(rec)
    return replace(state, instances=builder.snapshot())


def local_view(state: ClusterState, *, node_id: str, routable: Iterable[ContainerInfo]) -> ClusterState:
    """``state`` with this node's instance records matched to its ``routable`` (running) containers."""
    return _corrected(state, corrections(state.index.of_node(node_id), routable))


class LocalView:
    """:func:`local_view`, kept per service: the corrections of a service are worked out again only
    when its records (the index's change log) or its routable containers (a group of
    :class:`~daprdockr.core.containers.LocalContainers` is the same tuple while it did not change)
    did, so a start or a change elsewhere costs a look at that service, not at this node's
    every record."""

    def __init__(self, *, node_id: str) -> None:
        self.node_id = node_id
        self._index: InstanceIndex | None = None
        self._routable: LocalContainers | None = None
        self._of_service: dict[ServiceName, dict[Key, InstanceRecord | None]] = {}
        self._fixes: dict[Key, InstanceRecord | None] = {}

    def view(self, state: ClusterState, *, routable: Sequence[ContainerInfo]) -> ClusterState:
        now = routable if isinstance(routable, LocalContainers) else LocalContainers(routable)
        index, last, seen = state.index, self._routable, self._index
        if seen is None or last is None:
            self._of_service.clear()
            self._fixes = corrections(index.of_node(self.node_id), now)
            for key, fix in self._fixes.items():
                self._of_service.setdefault(key[0], {})[key] = fix
        else:
            for name in changed_services(seen, index) | changed_keys(last.by_service, now.by_service):
                for key in self._of_service.pop(name, {}):
                    del self._fixes[key]
                mine = {(name, n): rec for n, rec in index.of_service(name).items() if rec.node == self.node_id}
                fixes = corrections(mine, now.by_service.get(name, ())) if mine else {}
                if fixes:
                    self._of_service[name] = fixes
                    self._fixes.update(fixes)
        self._index, self._routable = index, now
        return _corrected(state, self._fixes)
