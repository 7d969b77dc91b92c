"""Rebalancing: moving instances from the node with the most of a service to the one with the
fewest, until every live node holds its fair share within one.  Pure.

Placement spreads new instances (the claim rule of :mod:`daprdockr.core.planning.claims`), but nothing
evened out what a storm of concurrent writers, a failover or a node that joined later left
behind: 50 concurrent ``svc set`` writers left a service's 39 instances at 8 / 17 / 14 over three
nodes, and a node joining a cluster got nothing.  Kubernetes needs the descheduler add-on for
this; Nomad and Swarm do not rebalance at all.

A move is the takeover that drains use (start-first: the instance starts on the node that gets
it, passes its check for ``update.min_healthy``, then its key moves and the old container leaves
every router before it stops), in one of the service's replacement slots.  A service moves only
when it is settled: every instance is routable and on its spec's version, no replacement slot is
taken (one move at a time, and never during a rolling update), no instance started or moved in
the last ``update.min_healthy`` seconds (the cool-down), ``rebalance`` is on for it.  Then,
among the live nodes that are not draining (and have room under their capacity), the one holding
the most instances (ties: the lowest node id) gives its highest-numbered instance to the one
holding the fewest (ties: the lowest node id), if they differ by two or more.  Every agent
computes the same move from the same etcd state, and only the receiving node acts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord


@dataclass(frozen=True, slots=True)
class Move:
    record: InstanceRecord  # the instance to take over (held by the node with the most)
    to: str  # the node that takes it (the one with the fewest)


def rebalance_move(
    spec: ServiceSpec,
    records: Iterable[InstanceRecord],
    *,
    nodes: Sequence[str],
    held_total: Mapping[str, int],
    capacity: Mapping[str, int],
    slots_taken: int,
    wall_now: float,
) -> Move | None:
    """The one move that evens ``spec``'s instances out next, or None.

    ``records`` are the service's instance records, ``nodes`` the live nodes that are not
    draining, ``held_total`` each node's instances of every service and ``capacity`` its limit
    (0: none), ``slots_taken`` the service's replacement slots in use, ``wall_now`` the time the
    records' ``since`` is measured in.
    """
    if not spec.rebalance or slots_taken or len(nodes) < 2 or spec.instances < 2:
        return None
    mine = [r for r in records if r.number <= spec.instances]
    if len(mine) != spec.instances:
        return None  # not every instance is placed: claims first
    if any(not r.routable or r.spec_hash != spec.runtime_hash for r in mine):
        return None  # unsettled (starting, failed, unhealthy, outdated): no move adds to it
    if any(wall_now - r.since < spec.update.min_healthy for r in mine):
        return None
    counts = dict.fromkeys(nodes, 0)
    for r in mine:
        if r.node in counts:
            counts[r.node] += 1
    most = max(counts, key=lambda n: (counts[n], -_order(nodes, n)))
    room = [n for n in nodes if not capacity.get(n) or held_total.get(n, 0) < capacity[n]]
    if not room:
        return None
    fewest = min(room, key=lambda n: (counts[n], _order(nodes, n)))
    if counts[most] - counts[fewest] < 2:
        return None
    record = max((r for r in mine if r.node == most), key=lambda r: r.number)
    return Move(record=record, to=fewest)


def _order(nodes: Sequence[str], node: str) -> int:
    return nodes.index(node)


class EvenCache:
    """Which services are *even* (no two live nodes differ by two or more of its instances), so
    no move can even them out: remembered per service while its spec, its records (the same
    mapping object: the mirror copies a service's records on change) and the live nodes stay the
    same, so a quiet pass looks at each service once, not at each instance."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[ServiceSpec, Mapping[int, InstanceRecord], tuple[str, ...], bool]] = {}
        self.uneven: set[ServiceName] = set()  # the services last found uneven (a scoped pass still looks at them)

    def even(self, spec: ServiceSpec, records: Mapping[int, InstanceRecord], *, nodes: Sequence[str]) -> bool:
        live = tuple(nodes)
        key = str(spec.name)
        seen = self._seen.get(key)
        if seen is not None and seen[0] is spec and seen[1] is records and seen[2] == live:
            return seen[3]
        counts = dict.fromkeys(live, 0)
        for r in records.values():
            if r.number <= spec.instances and r.node in counts:
                counts[r.node] += 1
        even = not counts or max(counts.values()) - min(counts.values()) < 2
        self._seen[key] = (spec, records, live, even)
        if even:
            self.uneven.discard(spec.name)
        else:
            self.uneven.add(spec.name)
        return even
