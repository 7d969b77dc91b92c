"""Which services a planning pass must look at: the ones that changed, or all.  Pure.

The planner is level-triggered, so a pass over every service is always right; but with most
events one service's record changed and nothing else did, and this node's plan for every other
service is what it was.  :func:`plan_scope` returns the services whose per-service inputs (spec,
records, slots, rollout, validity: compared by identity, as the mirror shares what did not
change) changed since the last pass, plus the services whose containers on this node, their
health, busy keys (an action in flight) or held keys (a retry's wait) changed, or None (plan
everything) when anything else the planner reads changed (:class:`PassInputs`: the lease,
claiming, capacity, live nodes, restarts), when bad keys, drains or paused containers are about
(their rules look across services), or when the last full pass is ``full_every`` seconds old (a
safety net, paced by its own cost: :func:`full_every`).  A timer the last plans set (a claim
grace, a retry's backoff: each kept per service) puts its service in the scope when it runs out.
So a large service converging (containers started, claims in flight) plans the services that
moved, not every service, on every event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from daprdockr.core.containers import ContainerInfo, LocalContainers
from daprdockr.core.instance_index import changed_keys
from daprdockr.core.names import ServiceName
from daprdockr.core.records import Health, NodeRecord
from daprdockr.core.routing import changed_specs
from daprdockr.core.state import ClusterState

FULL_EVERY = 5.0  # seconds: a full pass at least this often, whatever changed
FULL_PACE = 20.0  # ... but no more often than 20 x its own duration (at most 5 % of the loop)


def full_every(last_full_seconds: float) -> float:
    """How old the last full pass may get: :data:`FULL_EVERY`, longer when full passes are slow (a
    node holding 34 000 containers plans them all in ~0.35 s: every 7 s, not every 5 s)."""
    return max(FULL_EVERY, FULL_PACE * last_full_seconds)


@dataclass(frozen=True, slots=True)
class PassInputs:
    """What a pass reads beyond the per-service state (mappings compared by identity or value)."""

    lease: int
    claiming: bool
    capacity: int
    nodes: Mapping[str, NodeRecord]
    containers: Sequence[ContainerInfo]
    busy: frozenset[tuple[ServiceName, int]]
    health: Mapping[str, Health]
    restart: frozenset[str]
    held: frozenset[tuple[ServiceName, int]]  # keys with a retry or hold (their timers)
    paused: bool  # a container of ours is paused (its pause limit is a timer)

    def same(self, other: PassInputs) -> bool:
        """The same apart from containers, busy and held keys and health (those scope their services)."""
        return (self.lease == other.lease and self.claiming == other.claiming and self.capacity == other.capacity
                and self.nodes is other.nodes and self.restart == other.restart and not self.paused)


def moved_services(last: PassInputs, now: PassInputs) -> set[ServiceName] | None:
    """The services whose containers here, busy keys, held keys (a retry's wait: their services
    are planned while it lasts; its end is a timer) or containers' health differ between two
    passes' inputs (None: it cannot tell whose, as containers not indexed by service differ)."""
    out = {key[0] for key in last.busy ^ now.busy} | {key[0] for key in last.held | now.held}
    a, b = last.containers, now.containers
    if a is not b:
        if isinstance(a, LocalContainers) and isinstance(b, LocalContainers):
            out |= changed_keys(a.by_service, b.by_service)
        elif a != b:
            return None
    if last.health is not now.health:
        for cid in changed_keys(last.health, now.health):
            c = b.by_id.get(cid) if isinstance(b, LocalContainers) else None
            if c is None:
                c = a.by_id.get(cid) if isinstance(a, LocalContainers) else None
            if c is None:
                return None
            out.add(c.service)
    return out


def plan_scope(
    *, last: PassInputs | None, inputs: PassInputs, old: ClusterState | None, new: ClusterState,
    now: float, wakes: Mapping[ServiceName, float], last_full: float, full_every: float = FULL_EVERY,
) -> frozenset[ServiceName] | None:
    """The services this pass must plan, or None for all (see the module docstring).  ``wakes``
    are the moments the last plans asked for per service (the services whose moment came are
    planned), ``last_full`` when the last full pass ran."""
    if (last is None or old is None or not inputs.same(last) or now - last_full >= full_every
            or new.invalid_instances or old.invalid_instances or new.draining or old.draining):
        return None
    moved = moved_services(last, inputs)
    if moved is None:
        return None
    scope = changed_specs(old, new) | moved | {name for name, moment in wakes.items() if moment <= now}
    for a, b in ((old.slots, new.slots), (old.rollouts, new.rollouts), (old.invalid_services, new.invalid_services)):
        scope |= changed_keys(a, b)
    return frozenset(scope)
