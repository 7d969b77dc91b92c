"""The agent's pure planner: ``plan_next(desired, observed) -> Plan``.

:func:`plan_next` does no I/O.  It compares the desired services with what etcd says about instance
ownership and what this node's Docker engine runs (:class:`~daprdockr.core.planning.observed.Observed`),
and returns the actions that move this node towards the desired state.  It is called on every
change (level-triggered), so each action is the next step only; the reconciler re-plans from fresh
observations after every step.

A key held by this node on its *current* lease is *mine*; a key with our node id on an older lease
(we restarted faster than the TTL) is adopted by rewriting it on the current lease.  The parts, in
the order a pass runs them: this node's containers (:mod:`.per_container`), its keys without a
container here and unowned numbers to claim (:mod:`.claims`, by the spread rule of
:mod:`.placement`), takeovers from draining nodes and rebalancing (:mod:`.takeovers`); bad data
stops nothing (:mod:`.bad_data`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.planning.actions import Action
from daprdockr.core.planning.claims import plan_claims, plan_records
from daprdockr.core.planning.observed import Observed, Wake
from daprdockr.core.planning.per_container import plan_containers
from daprdockr.core.planning.takeovers import plan_handoffs, plan_rebalance


@dataclass(frozen=True, slots=True)
class Plan:
    """The actions to launch now, and when a time rule (claim grace, retry, hold) next changes
    the plan if nothing else happens before (``inf``: never)."""

    actions: list[Action]
    next_wake: float
    # the same per service: the moment a time rule next changes that service's plan (a pass
    # then plans the services whose moment came, not every service)
    wakes: Mapping[ServiceName, float] = field(default_factory=dict)


def plan_next(desired: Mapping[ServiceName, ServiceSpec], observed: Observed) -> Plan:
    """The next actions for this node, and when to plan again.  Pure: no I/O, no clock
    (``observed.now`` is the time).

    At most one action per instance key; keys in ``observed.busy`` (an action still running)
    or held (``observed.held_until``) are left alone.
    """
    out: list[Action] = []
    wake = Wake(observed.now)
    covered = plan_containers(desired, observed, out, wake)
    plan_records(desired, observed, covered, out, wake)
    plan_claims(desired, observed, covered, out, wake)
    plan_handoffs(desired, observed, out, wake)
    plan_rebalance(desired, observed, out, wake)
    return Plan(actions=out, next_wake=wake.at, wakes=wake.by_service)


def plan(desired: Mapping[ServiceName, ServiceSpec], observed: Observed) -> list[Action]:
    """:func:`plan_next`'s actions."""
    return plan_next(desired, observed).actions
