"""plan_scope: the services a pass must plan, or None (all), from what changed since the last pass."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from daprdockr.core.containers import ContainerInfo, LocalContainers
from daprdockr.core.keys import KeySchema
from daprdockr.core.mirror import StateMirror, WatchEvent
from daprdockr.core.names import ServiceName
from daprdockr.core.planning.actions import action_key
from daprdockr.core.planning.observed import Observed
from daprdockr.core.planning.plan import plan_next
from daprdockr.core.planning.scope import PassInputs, full_every, plan_scope
from daprdockr.core.state import ClusterState

SCHEMA = KeySchema("/dd")
WEB, API = ServiceName.parse("web.a"), ServiceName.parse("api.a")


def mirror() -> StateMirror:
    m = StateMirror(schema=SCHEMA)
    m.reset([], revision=1)
    for rev, name in enumerate((WEB, API), start=2):
        m.apply(WatchEvent(kind="put", key=SCHEMA.service(name), value=b'{"image": "x", "instances": 2}',
                           revision=rev))
    return m


def put(m: StateMirror, key: str, value: dict[str, object], *, lease: int = 7) -> ClusterState:
    m.apply(WatchEvent(kind="put", key=key, value=json.dumps(value).encode(), revision=m.revision + 1, lease=lease))
    return m.state()


RUNNING = {"node": "n2", "address": "127.0.0.12", "state": "running"}


def inputs(state: ClusterState, **changes: object) -> PassInputs:
    base = PassInputs(lease=7, claiming=True, capacity=0, nodes=state.nodes, containers=[], busy=frozenset(),
                      health={}, restart=frozenset(), held=frozenset(), paused=False)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_one_record_changed_plans_its_service_only() -> None:
    m = mirror()
    old = m.state()
    new = put(m, SCHEMA.instance(WEB, 1), RUNNING)
    assert plan_scope(last=inputs(old), inputs=inputs(new, nodes=old.nodes), old=old, new=new, now=1.0, wakes={},
                      last_full=0.5) == {WEB}


def test_nothing_changed_plans_nothing() -> None:
    m = mirror()
    state = m.state()
    assert plan_scope(last=inputs(state), inputs=inputs(state), old=state, new=state, now=1.0, wakes={},
                      last_full=0.5) == frozenset()


@pytest.mark.parametrize(("change", "now", "due", "last_full"), [
    ({"lease": 8}, 1.0, 9.0, 0.5),
    ({"claiming": False}, 1.0, 9.0, 0.5),
    ({"capacity": 3}, 1.0, 9.0, 0.5),
    ({"restart": frozenset({"c1"})}, 1.0, 9.0, 0.5),
    ({"paused": True}, 1.0, 9.0, 0.5),
    ({}, 6.0, 9.0, 0.5),  # the last full pass is 5.5 s old
])
def test_anything_beyond_the_services_plans_everything(change: dict[str, object], now: float, due: float,
                                                        last_full: float) -> None:
    m = mirror()
    old = m.state()
    new = put(m, SCHEMA.instance(WEB, 1), RUNNING)
    assert plan_scope(last=inputs(old), inputs=inputs(new, nodes=old.nodes, **change), old=old, new=new, now=now,
                      wakes={WEB: due}, last_full=last_full) is None


@pytest.mark.parametrize(("full_seconds", "now", "full"), [
    (0.01, 6.0, True),   # cheap full passes: every 5 s
    (0.35, 6.0, False),  # a node of 34 000 containers (0.35 s per full pass): not yet at 5.5 s ...
    (0.35, 7.6, True),   # ... but at 7.1 s (20 x its cost)
    (2.0, 30.0, False),  # under load: no more often than every 40 s
    (2.0, 41.0, True),
])
def test_the_safety_net_full_pass_is_paced_by_its_own_cost(full_seconds: float, now: float, full: bool) -> None:
    m = mirror()
    old = m.state()
    new = put(m, SCHEMA.instance(WEB, 1), RUNNING)
    scope = plan_scope(last=inputs(old), inputs=inputs(new, nodes=old.nodes), old=old, new=new, now=now, wakes={},
                       last_full=0.5, full_every=full_every(full_seconds))
    assert (scope is None) is full


def test_busy_and_held_keys_containers_and_health_put_their_services_in_scope() -> None:
    m = mirror()
    old = m.state()
    new = put(m, SCHEMA.instance(WEB, 1), RUNNING)
    api = ContainerInfo(id="a1", service=API, number=1, node="n1", spec_hash="h", running=True)
    before = inputs(old, containers=LocalContainers([]))
    assert plan_scope(last=before, inputs=inputs(new, nodes=old.nodes, containers=LocalContainers([api])), old=old,
                      new=new, now=1.0, wakes={}, last_full=0.5) == {WEB, API}
    assert plan_scope(last=before, inputs=inputs(new, nodes=old.nodes, containers=LocalContainers([]),
                                                 busy=frozenset({(API, 2)})), old=old, new=new, now=1.0, wakes={},
                      last_full=0.5) == {WEB, API}
    assert plan_scope(last=inputs(old, containers=[]), inputs=inputs(new, nodes=old.nodes, containers=[api]), old=old,
                      new=new, now=1.0, wakes={}, last_full=0.5) is None  # (a plain list: cannot tell whose)
    assert plan_scope(last=before, inputs=inputs(new, nodes=old.nodes, containers=LocalContainers([]),
                                                 held=frozenset({(API, 1)})), old=old, new=new, now=1.0, wakes={},
                      last_full=0.5) == {WEB, API}  # (a retry's wait: its service planned while it lasts)
    listed = LocalContainers([api])
    assert plan_scope(last=inputs(old, containers=listed, health={"a1": "starting"}),
                      inputs=inputs(new, nodes=old.nodes, containers=listed, health={"a1": "healthy"}), old=old,
                      new=new, now=1.0, wakes={}, last_full=0.5) == {WEB, API}


@pytest.mark.parametrize("key", [SCHEMA.node("n2"), SCHEMA.drain("n2"), SCHEMA.instance(API, 1)])
def test_nodes_drains_and_bad_keys_plan_everything(key: str) -> None:
    m = mirror()
    old = m.state()
    value = {"address": "127.0.0.12"} if "/nodes/" in key else {} if "/drain/" in key else {"node": 3}
    new = put(m, key, value)
    assert plan_scope(last=inputs(old), inputs=inputs(new), old=old, new=new, now=1.0, wakes={}, last_full=0.5) is None


def test_slots_and_rollouts_put_their_service_in_scope() -> None:
    m = mirror()
    old = m.state()
    put(m, SCHEMA.slot(API, 1), {"node": "n1", "instance": 1, "target": "t"})
    new = put(m, SCHEMA.rollout(WEB), {"version": 2, "target": "t"})
    assert plan_scope(last=inputs(old), inputs=inputs(new, nodes=old.nodes), old=old, new=new, now=1.0, wakes={},
                      last_full=0.5) == {WEB, API}


def test_a_scoped_pass_over_an_indexed_listing_plans_what_a_plain_listing_does() -> None:
    """The planner looks up the scope's containers in a LocalContainers listing instead of walking
    all of them: the actions are the same as over the plain list, and only the scope's."""
    m = mirror()
    state = m.state()
    mine = [ContainerInfo(id=f"{name.service}{n}", service=name, number=n, node="n1", spec_hash="old", running=True)
            for name in (WEB, API) for n in (1, 2, 3)]  # stale versions and a number beyond the spec's 2
    observed = Observed(node_id="n1", lease=7, now=10.0, instances=state.instances, nodes=state.nodes,
                        containers=mine, claiming=False)
    for scope in (frozenset({WEB}), frozenset({API}), frozenset({WEB, API})):
        plain = plan_next(state.services, replace(observed, scope=scope)).actions
        indexed = plan_next(state.services, replace(observed, containers=LocalContainers(mine), scope=scope)).actions
        assert indexed == plain and plain
        assert {action_key(a)[0] for a in plain} == scope


def test_a_due_timer_puts_its_service_in_scope_not_every_service() -> None:
    """A claim grace or a retry's backoff running out re-plans its own service (it re-planned
    every service: at 33 000 containers per node, a full pass on every timer)."""
    m = mirror()
    old = m.state()
    new = put(m, SCHEMA.instance(WEB, 1), RUNNING)
    wakes = {API: 9.0, WEB: 12.0}
    assert plan_scope(last=inputs(old), inputs=inputs(new, nodes=old.nodes), old=old, new=new, now=9.0,
                      wakes=wakes, last_full=8.0) == {WEB, API}  # WEB changed, API's timer is due
    assert plan_scope(last=inputs(new), inputs=inputs(new, nodes=new.nodes), old=new, new=new, now=9.0,
                      wakes=wakes, last_full=8.0) == {API}
    assert plan_scope(last=inputs(new), inputs=inputs(new, nodes=new.nodes), old=new, new=new, now=8.5,
                      wakes=wakes, last_full=8.0) == set()
