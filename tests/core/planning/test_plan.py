"""Table tests for the pure planner (no I/O: records in, actions out)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from daprdockr.core.containers import ContainerInfo
from daprdockr.core.lifecycle import UpdatePolicy
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.planning.actions import (
    Action,
    Adopt,
    Claim,
    Refresh,
    Release,
    Repair,
    Roll,
    Stop,
    TakeOver,
    action_key,
)
from daprdockr.core.planning.claims import unowned_keys
from daprdockr.core.planning.observed import Observed
from daprdockr.core.planning.placement import deal_unowned, fair_share, preferred_node
from daprdockr.core.planning.plan import plan
from daprdockr.core.records import InstanceRecord, NodeRecord
from daprdockr.core.rollout import RolloutRecord, Slot
from daprdockr.core.state import BadKey

WEB = ServiceName(group="myapp", service="web")
API = ServiceName(group="myapp", service="api")
ME, LEASE = "n1", 100


def spec(n: int, *, name: ServiceName = WEB, image: str = "busybox", parallel: int = 1) -> ServiceSpec:
    return ServiceSpec(name=name, image=image, instances=n, http_port=80, update=UpdatePolicy(parallel=parallel))


HASH = spec(1).runtime_hash


def rec(number: int, *, node: str = ME, lease: int = LEASE, state: str = "running",
        name: ServiceName = WEB, cid: str = "", ports: tuple[tuple[str, int], ...] = ()) -> InstanceRecord:
    return InstanceRecord(
        service=name, number=number, node=node, address="127.0.0.11", state=state,  # type: ignore[arg-type]
        lease=lease, container_id=cid or f"c{number}", spec_hash=HASH,
        ports=ports or (("80/tcp", 30000 + number),), create_revision=number,
    )


def ctr(number: int, *, running: bool = True, spec_hash: str = HASH, name: ServiceName = WEB,
        node: str = ME, created: float = 1.0, cid: str = "", paused: bool = False) -> ContainerInfo:
    return ContainerInfo(
        id=cid or f"c{number}", service=name, number=number, node=node, spec_hash=spec_hash,
        running=running, ports=(("80/tcp", 30000 + number),), created=created, paused=paused,
    )


def nodes(*ids: str) -> dict[str, NodeRecord]:
    return {i: NodeRecord(node_id=i, address="127.0.0.1") for i in ids}


def obs(*, instances: list[InstanceRecord] = (), containers: list[ContainerInfo] = (),  # type: ignore[assignment]
        live: tuple[str, ...] = (ME,), **kw: object) -> Observed:
    return Observed(
        node_id=ME, lease=LEASE, now=kw.pop("now", 100.0),  # type: ignore[arg-type]
        instances={r.key_tuple: r for r in instances}, nodes=nodes(*live),
        containers=list(containers), **kw,  # type: ignore[arg-type]
    )


def kinds(actions: list[Action]) -> list[tuple[str, int]]:
    return sorted((type(a).__name__, action_key(a)[1]) for a in actions)


@pytest.mark.parametrize(
    ("instances", "live", "share"),
    [(9, 3, 3), (10, 3, 4), (1, 3, 1), (0, 3, 0), (6, 1, 6), (5, 0, 5)],
)
def test_fair_share(instances: int, live: int, share: int) -> None:
    assert fair_share(instances, live) == share


@pytest.mark.parametrize(
    ("numbers", "room", "dealt"),
    [
        ([1, 2, 3], {"a": 1, "b": 1, "c": 1}, {1: "a", 2: "b", 3: "c"}),  # everyone has room: preferred
        ([1, 3, 5], {"a": 0, "b": 3, "c": 0}, {1: "b", 3: "b", 5: "b"}),  # only b has room
        ([1, 2], {"a": 0, "b": 0, "c": 1}, {1: "c"}),  # not enough room: the rest stay undealt
        ([3, 6], {"a": 2, "b": 0, "c": 0}, {3: "a", 6: "a"}),  # ring wraps past the end
        ([], {"a": 1}, {}),
    ],
)
def test_deal_unowned(numbers: list[int], room: dict[str, int], dealt: dict[int, str]) -> None:
    assert deal_unowned(numbers, live=("a", "b", "c"), room=room) == dealt


@pytest.mark.parametrize(("number", "node"), [(1, "a"), (2, "b"), (3, "c"), (4, "a"), (9, "c")])
def test_preferred_node_round_robin(number: int, node: str) -> None:
    assert preferred_node(number, ["a", "b", "c"]) == node


CASES: list[tuple[str, dict[ServiceName, ServiceSpec], Observed, list[tuple[str, int]]]] = [
    ("alone: claim everything", {WEB: spec(3)}, obs(), [("Claim", 1), ("Claim", 2), ("Claim", 3)]),
    ("three nodes: only preferred numbers at once", {WEB: spec(6)}, obs(live=("n1", "n2", "n3")),
     [("Claim", 1), ("Claim", 4)]),
    # its own dealt numbers (1, 4) first: they fill the share, so 3 (past its grace) waits for the
    # overflow grace like any number beyond the share
    ("own numbers before others' past their grace", {WEB: spec(6)},
     obs(live=("n1", "n2", "n3"), unowned_since={(WEB, 2): 99.5, (WEB, 3): 98.5}, claim_grace=1.0),
     [("Claim", 1), ("Claim", 4)]),
    # dealt 1 and 6 (its share), then 3 (dealt to n3, unowned past the overflow grace); 2 is
    # within its claim grace
    ("others' numbers past the overflow grace after its own", {WEB: spec(6)},
     obs(live=("n1", "n2", "n3"), instances=[rec(4, node="n2", lease=7), rec(5, node="n2", lease=7)],
         unowned_since={(WEB, 2): 99.5, (WEB, 3): 90.0, (WEB, 6): 90.0}, claim_grace=1.0),
     [("Claim", 1), ("Claim", 3), ("Claim", 6)]),
    ("beyond fair share only after the overflow grace", {WEB: spec(3)},
     obs(live=("n1", "n2", "n3"), instances=[rec(1)], containers=[ctr(1)],
         unowned_since={(WEB, 2): 98.0, (WEB, 3): 90.0}, claim_grace=1.0),
     [("Claim", 3)]),
    ("fair share caps claims even after grace", {WEB: spec(3)},
     obs(live=("n1", "n2", "n3"), instances=[rec(1)], containers=[ctr(1)],
         unowned_since={(WEB, 2): 98.5, (WEB, 3): 98.5}),
     []),
    ("capacity caps claims", {WEB: spec(5)}, obs(capacity=2), [("Claim", 1), ("Claim", 2)]),
    ("not claiming while settling", {WEB: spec(2)}, obs(claiming=False), []),
    ("owned by others: nothing", {WEB: spec(2)},
     obs(instances=[rec(1, node="n2", lease=7), rec(2, node="n3", lease=8)], live=("n1", "n2", "n3")), []),
    ("steady state: nothing", {WEB: spec(1)}, obs(instances=[rec(1)], containers=[ctr(1)]), []),
    ("scale down releases highest numbers", {WEB: spec(1)},
     obs(instances=[rec(1), rec(2), rec(3)], containers=[ctr(1), ctr(2), ctr(3)]),
     [("Release", 2), ("Release", 3)]),
    ("service deleted: release all", {},
     obs(instances=[rec(1), rec(2)], containers=[ctr(1), ctr(2)]), [("Release", 1), ("Release", 2)]),
    ("claimed but no container: start", {WEB: spec(1)}, obs(instances=[rec(1, state="starting")]),
     [("Start", 1)]),
    ("failed start waits for its retry time", {WEB: spec(1)},
     obs(instances=[rec(1, state="failed")], retry_at={(WEB, 1): 200.0}), []),
    ("failed start retried after its retry time", {WEB: spec(1)},
     obs(instances=[rec(1, state="failed")], retry_at={(WEB, 1): 50.0}), [("Start", 1)]),
    ("container exited: restart", {WEB: spec(1)},
     obs(instances=[rec(1)], containers=[ctr(1, running=False)]), [("Start", 1)]),
    ("container paused: the record says paused, nothing restarts", {WEB: spec(1)},
     obs(instances=[rec(1)], containers=[ctr(1, paused=True)]), [("Refresh", 1)]),
    ("paused and its record says so: nothing", {WEB: spec(1)},
     obs(instances=[rec(1, state="paused")], containers=[ctr(1, paused=True)], paused_since={"c1": 0.0}), []),
    ("paused, spec changed: no roll while paused", {WEB: spec(1, image="busybox:2")},
     obs(instances=[rec(1, state="paused")], containers=[ctr(1, paused=True)]), []),
    ("paused with no pause_limit, for ages: nothing", {WEB: spec(1)},
     obs(instances=[rec(1, state="paused")], containers=[ctr(1, paused=True)], paused_since={"c1": -1e9}), []),
    ("paused longer than pause_limit: replace", {WEB: replace(spec(1), pause_limit=30.0)},
     obs(instances=[rec(1, state="paused")], containers=[ctr(1, paused=True)], paused_since={"c1": 60.0}),
     [("Start", 1)]),
    ("paused, pause_limit not reached: nothing", {WEB: replace(spec(1), pause_limit=60.0)},
     obs(instances=[rec(1, state="paused")], containers=[ctr(1, paused=True)], paused_since={"c1": 60.0}), []),
    ("unpaused: the record says running again", {WEB: spec(1)},
     obs(instances=[rec(1, state="paused")], containers=[ctr(1)]), [("Refresh", 1)]),
    ("spec changed: roll", {WEB: spec(1, image="busybox:2")},
     obs(instances=[rec(1)], containers=[ctr(1)]), [("Roll", 1)]),
    ("spec changed, every slot taken: wait", {WEB: spec(2, image="busybox:2")},
     obs(instances=[rec(1), rec(2)], containers=[ctr(1), ctr(2)], slots={WEB: {1: Slot(node="n2", instance=3)}}),
     []),
    ("spec changed, rollout paused: hold", {WEB: spec(1, image="busybox:2")},
     obs(instances=[rec(1)], containers=[ctr(1)],
         rollouts={WEB: RolloutRecord(version=2, target=spec(1, image="busybox:2").runtime_hash, state="paused")}),
     []),
    ("spec changed, a rollout of another target paused: roll", {WEB: spec(1, image="busybox:2")},
     obs(instances=[rec(1)], containers=[ctr(1)], rollouts={WEB: RolloutRecord(version=2, target="x", state="paused")}),
     [("Roll", 1)]),
    ("spec changed, a replacement towards it failed (rollout undecided): hold",
     {WEB: spec(2, image="busybox:2", parallel=2)},
     obs(instances=[rec(1), rec(2)], containers=[ctr(1), ctr(2)],
         slots={WEB: {1: Slot(node="n2", instance=3, target=spec(1, image="busybox:2").runtime_hash,
                              failed="could not start")}}),
     []),
    ("spec changed, a failed replacement of another target left a slot: roll",
     {WEB: spec(2, image="busybox:2", parallel=2)},
     obs(instances=[rec(1), rec(2)], containers=[ctr(1), ctr(2)],
         slots={WEB: {1: Slot(node="n2", instance=3, target="x", failed="could not start")}}),
     [("Roll", 1), ("Roll", 2)]),
    ("spec changed and crashed: restart with the new spec, no slot", {WEB: spec(1, image="busybox:2")},
     obs(instances=[rec(1)], containers=[ctr(1, running=False)], slots={WEB: {1: Slot(node="n2", instance=3)}}),
     [("Start", 1)]),
    ("spec changed on an old lease: adopt first", {WEB: spec(1, image="busybox:2")},
     obs(instances=[rec(1, lease=99)], containers=[ctr(1)]), [("Adopt", 1)]),
    ("restart left a replacement beside the container the record names: stop the replacement",
     {WEB: spec(1, image="busybox:2")},
     obs(instances=[rec(1)], containers=[ctr(1, created=1.0), ctr(1, cid="new", created=2.0,
                                                                   spec_hash=spec(1, image="busybox:2").runtime_hash)]),
     [("Roll", 1), ("Stop", 1)]),
    ("unhealthy past restart_unhealthy_after: restart", {WEB: spec(1)},
     obs(instances=[rec(1)], containers=[ctr(1)], restart=frozenset({"c1"})), [("Start", 1)]),
    ("health changed: the record follows", {WEB: spec(1)},
     obs(instances=[rec(1)], containers=[ctr(1)], health={"c1": "unhealthy"}), [("Refresh", 1)]),
    ("draining: no claims", {WEB: spec(2)}, obs(draining=frozenset({ME})), []),
    ("draining: a record without container is released", {WEB: spec(1)},
     obs(instances=[rec(1)], draining=frozenset({ME})), [("Release", 1)]),
    ("draining: a crashed container is released, not restarted", {WEB: spec(1)},
     obs(instances=[rec(1)], containers=[ctr(1, running=False)], draining=frozenset({ME})), [("Release", 1)]),
    ("draining: running instances stay until taken over", {WEB: spec(1)},
     obs(instances=[rec(1)], containers=[ctr(1)], draining=frozenset({ME})), []),
    ("draining: an unclaimed container is not adopted", {WEB: spec(1)},
     obs(containers=[ctr(1)], draining=frozenset({ME})), [("Stop", 1)]),
    ("another node drains: take over what the deal gives us", {WEB: spec(4, image="busybox")},
     obs(live=("n1", "n2", "n3"), draining=frozenset({"n3"}),
         instances=[rec(1), rec(2, node="n2", lease=7), rec(3, node="n3", lease=8), rec(4, node="n3", lease=8)],
         containers=[ctr(1)]),
     [("TakeOver", 3)]),
    ("another node drains: takeovers wait for a slot", {WEB: spec(4)},
     obs(live=("n1", "n2", "n3"), draining=frozenset({"n3"}), slots={WEB: {1: Slot(node="n2", instance=4)}},
         instances=[rec(1), rec(2, node="n2", lease=7), rec(3, node="n3", lease=8), rec(4, node="n3", lease=8)],
         containers=[ctr(1)]),
     []),
    ("another node drains: only running instances are moved", {WEB: spec(2)},
     obs(live=("n1", "n2"), draining=frozenset({"n2"}), instances=[rec(1), rec(2, node="n2", lease=7,
                                                                            state="failed")],
         containers=[ctr(1)]),
     []),
    ("a draining node is no capacity: its unowned numbers come to us", {WEB: spec(2)},
     obs(live=("n1", "n2"), draining=frozenset({"n2"}), instances=[rec(1)], containers=[ctr(1)]),
     [("Claim", 2)]),
    ("held by another node: stop our copy", {WEB: spec(1)},
     obs(instances=[rec(1, node="n2", lease=7)], containers=[ctr(1)], live=("n1", "n2")), [("Stop", 1)]),
    ("our key on an old lease: adopt", {WEB: spec(1)},
     obs(instances=[rec(1, lease=99)], containers=[ctr(1)]), [("Adopt", 1)]),
    ("unclaimed healthy container: adopt (no extra claim)", {WEB: spec(1)},
     obs(containers=[ctr(1)]), [("Adopt", 1)]),
    ("unclaimed stale container: stop, then claim afresh", {WEB: spec(1)},
     obs(containers=[ctr(1, spec_hash="old")]), [("Claim", 1), ("Stop", 1)]),
    ("record out of date: refresh", {WEB: spec(1)},
     obs(instances=[rec(1, state="starting")], containers=[ctr(1)]), [("Refresh", 1)]),
    ("duplicate containers: keep running one", {WEB: spec(1)},
     obs(instances=[rec(1)], containers=[ctr(1), ctr(1, running=False, cid="old", created=0.0)]),
     [("Stop", 1)]),
    ("busy keys are left alone", {WEB: spec(2)},
     obs(instances=[rec(1, state="starting")], busy=frozenset({(WEB, 1), (WEB, 2)})), []),
    ("failover: numbers whose preferred node is full are dealt to us at once", {WEB: spec(6)},
     obs(live=("n1", "n2"), instances=[rec(n, node="n2", lease=7) for n in (2, 4, 6)]),
     [("Claim", 1), ("Claim", 3), ("Claim", 5)]),
    ("failover: the full node does not claim them", {WEB: spec(6)},
     obs(live=("n1", "n2"), instances=[rec(n) for n in (2, 4, 6)], containers=[ctr(n) for n in (2, 4, 6)]),
     []),
    ("another node's container is never touched", {WEB: spec(1)},
     obs(instances=[rec(1, node="n2", lease=7)], containers=[ctr(1, node="n2")], live=("n1", "n2")), []),
]


@pytest.mark.parametrize(
    ("desired", "observed", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_plan_table(
    desired: dict[ServiceName, ServiceSpec], observed: Observed, expected: list[tuple[str, int]]
) -> None:
    assert kinds(plan(desired, observed)) == sorted(expected)


def test_stop_reason_names_holder() -> None:
    actions = plan({WEB: spec(1)}, obs(instances=[rec(1, node="n2", lease=7)], containers=[ctr(1)]))
    assert isinstance(actions[0], Stop) and "n2" in actions[0].reason


def test_roll_carries_old_container_and_new_spec() -> None:
    (action,) = plan({WEB: spec(1, image="x")}, obs(instances=[rec(1)], containers=[ctr(1)]))
    assert isinstance(action, Roll) and action.old.id == "c1" and action.spec.image == "x"


def test_handoff_is_stopped_after_confirmed_removal() -> None:
    moved = replace(rec(1, node="n2", lease=7), mod_revision=42)
    (action,) = plan({WEB: spec(1)}, obs(instances=[moved], containers=[ctr(1)], live=("n1", "n2")))
    assert isinstance(action, Stop) and action.removed_at == 42


def test_takeover_spreads_a_draining_node_over_the_others() -> None:
    """Every non-draining node plans from the same state; together they take each instance once."""
    live = ("n1", "n2", "n3")
    instances = [rec(n, node="n3", lease=8) for n in range(1, 7)]
    taken: list[int] = []
    for me in ("n1", "n2"):
        o = replace(obs(live=live, instances=instances, draining=frozenset({"n3"})), node_id=me)
        actions = plan({WEB: replace(spec(6), update=replace(spec(6).update, parallel=6))}, o)
        assert all(isinstance(a, TakeOver) for a in actions)
        taken += [action_key(a)[1] for a in actions]
    assert sorted(taken) == [1, 2, 3, 4, 5, 6]


def test_release_carries_container() -> None:
    (action,) = plan({}, obs(instances=[rec(1)], containers=[ctr(1)]))
    assert isinstance(action, Release) and action.container is not None


def test_adopt_counts_towards_share_and_refresh_kind() -> None:
    # adopted container 1 + share of 1 (2 instances, 2 nodes): no extra claim
    actions = plan({WEB: spec(2)}, obs(containers=[ctr(1)], live=("n1", "n2")))
    assert [type(a) for a in actions] == [Adopt]
    actions = plan({WEB: spec(1)}, obs(instances=[rec(1, ports=(("80/tcp", 1),))], containers=[ctr(1)]))
    assert [type(a) for a in actions] == [Refresh]


def simulate(node_count: int, instances: int, rounds: int = 10) -> Counter[str]:
    """Run the planner for every node in turn, applying claims like etcd would (first wins)."""
    ids = [f"n{i}" for i in range(1, node_count + 1)]
    records: dict[tuple[ServiceName, int], InstanceRecord] = {}
    desired = {WEB: spec(instances)}
    now = 0.0
    for _ in range(rounds):
        now += 0.5
        for node in ids:
            o = Observed(
                node_id=node, lease=hash(node), now=now, instances=dict(records),
                nodes=nodes(*ids), containers=[],
                unowned_since=dict.fromkeys(unowned_keys(desired, records), 0.0),
            )
            for a in plan(desired, o):
                if isinstance(a, Claim) and a.key not in records:
                    records[a.key] = replace(rec(a.key[1], node=node, lease=hash(node)), state="starting")
    return Counter(r.node for r in records.values())


@pytest.mark.parametrize(
    ("node_count", "instances", "expected"),
    [(3, 9, [3, 3, 3]), (3, 10, [4, 3, 3]), (2, 5, [3, 2]), (4, 2, [1, 1]), (1, 4, [4])],
)
def test_simulated_spread(node_count: int, instances: int, expected: list[int]) -> None:
    counts = simulate(node_count, instances)
    assert sum(counts.values()) == instances
    assert sorted(counts.values(), reverse=True) == expected


# --------------------------------------------------------------------------- bad data stops nothing
def bad(number: int, *, lease: int = LEASE, name: ServiceName = WEB, node: str = "") -> BadKey:
    return BadKey(key=f"/p/instances/{name.group}/{name.service}/{number}", reason="value is not JSON",
                  lease=lease, create_revision=number, mod_revision=50 + number, node=node)


@pytest.mark.parametrize(
    ("desc", "instances", "containers", "bad_keys", "frozen", "want"),
    [
        ("frozen service: containers and keys left alone",
         [rec(1), rec(2)], [ctr(1), ctr(2), ctr(3)], [], {WEB}, []),
        ("frozen service: no claim, no start", [], [], [], {WEB}, []),
        ("frozen service: our running containers keep their keys (after our restart: a new lease)",
         [rec(1, lease=LEASE - 1), rec(2, node="n2")], [ctr(1), ctr(2), ctr(3), ctr(4, running=False)], [], {WEB},
         [("Adopt", 1)]),
        ("our malformed key with our running container: repair it",
         [rec(1)], [ctr(1), ctr(2)], [bad(2)], set(), [("Repair", 2)]),
        ("our malformed key, container exited: delete the key",
         [rec(1)], [ctr(1), ctr(2, running=False)], [bad(2)], set(), [("Purge", 2)]),
        ("key on no lease over our running container: rebind it to our lease (deleting it would let "
         "another node claim the number and stop our container)",
         [rec(1)], [ctr(1), ctr(2)], [bad(2, lease=0, node=ME)], set(), [("Repair", 2)]),
        ("key on no lease naming nobody, over our running container: rebind it",
         [rec(1)], [ctr(1), ctr(2)], [bad(2, lease=0)], set(), [("Repair", 2)]),
        ("key on no lease naming us, our container exited: delete it",
         [rec(1)], [ctr(1), ctr(2, running=False)], [bad(2, lease=0, node=ME)], set(), [("Purge", 2)]),
        ("malformed key on no lease, no container anywhere: delete it (any node)",
         [rec(1)], [ctr(1)], [bad(2, lease=0)], set(), [("Purge", 2)]),
        ("key on no lease naming another live node: left to that node",
         [rec(1)], [ctr(1)], [bad(2, lease=0, node="n2")], set(), []),
        ("key on no lease naming a node that is gone: delete it",
         [rec(1)], [ctr(1)], [bad(2, lease=0, node="n9")], set(), [("Purge", 2)]),
        ("malformed key on another lease: the number is taken, our container stays",
         [rec(1)], [ctr(1), ctr(2)], [bad(2, lease=999)], set(), []),
        ("malformed key on another lease, no container: not claimed",
         [rec(1)], [ctr(1)], [bad(2, lease=999)], set(), []),
        ("our malformed key, no container here: delete it",
         [rec(1)], [ctr(1)], [bad(2)], set(), [("Purge", 2)]),
    ],
)
def test_bad_data_never_stops_anything(desc: str, instances: list[InstanceRecord], containers: list[ContainerInfo],
                                       bad_keys: list[BadKey], frozen: set[ServiceName],
                                       want: list[tuple[str, int]]) -> None:
    desired = {} if frozen else {WEB: spec(2)}
    o = obs(instances=instances, containers=containers, frozen=frozenset(frozen), live=(ME, "n2"),
            bad_instances={(WEB, int(b.key.rsplit("/", 1)[1])): b for b in bad_keys})
    actions = plan(desired, o)
    assert kinds(actions) == want, desc
    assert not any(isinstance(a, Stop | Release) for a in actions), desc


@pytest.mark.parametrize(
    ("desc", "instances", "containers", "want"),
    [
        ("our running container, its record on our lease names another node: rewrite it as ours",
         [rec(1), rec(2, node="ghost")], [ctr(1), ctr(2)], [("Refresh", 2)]),
        ("a record on our lease names another node, no container here: start it as ours",
         [rec(1), rec(2, node="ghost")], [ctr(1)], [("Start", 2)]),
        ("another node's record on its own lease: our container of it stops (it was taken over)",
         [rec(1), rec(2, node="n2", lease=7)], [ctr(1), ctr(2)], [("Stop", 2)]),
    ],
)
def test_a_record_on_our_lease_is_ours_whatever_node_it_names(
    desc: str, instances: list[InstanceRecord], containers: list[ContainerInfo], want: list[tuple[str, int]]
) -> None:
    """Regression: ``{"node": "ghost", ...}`` written over our key on our lease made the owner stop
    its healthy container ("held by node ghost") and left the number blocked while our lease lived."""
    actions = plan({WEB: spec(2)}, obs(instances=instances, containers=containers, live=(ME, "n2")))
    assert kinds(actions) == want, desc


def test_unowned_keys_leave_out_malformed_keys() -> None:
    assert unowned_keys({WEB: spec(3)}, {(WEB, 1): rec(1)}, {(WEB, 2): bad(2)}) == {(WEB, 3)}


@pytest.mark.parametrize(
    ("claiming", "running", "spec_hash", "want"),
    [
        (True, True, HASH, [("Adopt", 1)]),
        # regression: when our lease expired while we were cut off (or at start, while settling) the
        # keys are gone and we cannot claim yet: the healthy container was stopped and re-created
        (False, True, HASH, []),
        (False, True, "old", [("Stop", 1)]),
        (True, False, HASH, [("Claim", 1), ("Stop", 1)]),
    ],
)
def test_a_container_whose_key_vanished_is_kept_until_we_can_claim(
    claiming: bool, running: bool, spec_hash: str, want: list[tuple[str, int]]
) -> None:
    o = obs(containers=[ctr(1, running=running, spec_hash=spec_hash)], claiming=claiming)
    assert kinds(plan({WEB: spec(1)}, o)) == want


def test_rebalancing_moves_one_instance_to_the_node_with_the_fewest_when_it_is_this_node() -> None:
    """Six instances on n2 and n3, none here (n1 joined later): n1 takes over n2's highest number
    (ties between n2 and n3: the lowest id), once the service is quiet; n2 and n3 do nothing."""
    recs = [replace(rec(n, node="n2" if n <= 3 else "n3", lease=7 if n <= 3 else 8), since=0.0) for n in range(1, 7)]
    quiet = dict(instances=recs, live=("n1", "n2", "n3"), rebalance=True, wall=1000.0)
    assert kinds(plan({WEB: spec(6)}, obs(**quiet))) == [("TakeOver", 3)]  # type: ignore[arg-type]
    assert kinds(plan({WEB: spec(6)}, obs(**{**quiet, "rebalance": False}))) == []  # type: ignore[arg-type]
    assert kinds(plan({WEB: spec(6)}, obs(**{**quiet, "wall": 5.0}))) == []  # type: ignore[arg-type]  # cooling down
    # bad data in etcd (a malformed spec, whose last good version is planned with, or instance key)
    assert kinds(plan({WEB: spec(6)}, obs(**{**quiet, "invalid": frozenset({WEB})}))) == []  # type: ignore[arg-type]
    other = Observed(node_id="n2", lease=7, now=100.0, instances={r.key_tuple: r for r in recs},
                     nodes=nodes("n1", "n2", "n3"), containers=[ctr(n, node="n2") for n in (1, 2, 3)],
                     rebalance=True, wall=1000.0)
    assert plan({WEB: spec(6)}, other) == []  # only the receiving node acts


@pytest.mark.parametrize(
    ("desc", "desired", "observed", "want"),
    [
        ("a stale record is refreshed under the desired spec's check", {WEB: spec(1)},
         obs(instances=[rec(1, state="starting")], containers=[ctr(1)]), ("Refresh", 1)),
        ("scaled down: released with the spec that still names its stop signal", {WEB: spec(1)},
         obs(instances=[rec(1), rec(2)], containers=[ctr(1)]), ("Release", 2)),
        ("service deleted: released with no spec", {},
         obs(instances=[rec(1)], containers=[ctr(1)]), ("Release", 1)),
        ("held by another node: stopped with the spec", {WEB: spec(1)},
         obs(instances=[rec(1, node="n2", lease=7)], containers=[ctr(1)], live=(ME, "n2")), ("Stop", 1)),
        ("a container nobody desires: stopped with no spec", {},
         obs(containers=[ctr(1)]), ("Stop", 1)),
        ("a malformed key over our running container: repaired under the spec", {WEB: spec(2)},
         obs(instances=[rec(1)], containers=[ctr(1), ctr(2)], bad_instances={(WEB, 2): bad(2)}), ("Repair", 2)),
    ],
)
def test_actions_carry_the_spec_they_were_planned_from(
    desc: str, desired: dict[ServiceName, ServiceSpec], observed: Observed, want: tuple[str, int]
) -> None:
    """The executor acts on the spec in the action (its health check, stop signal and grace), never
    on one it reads again: each action names the desired spec of its service, or None."""
    [action] = [a for a in plan(desired, observed) if (type(a).__name__, action_key(a)[1]) == want]
    assert isinstance(action, Refresh | Release | Stop | Repair), desc
    assert action.spec is desired.get(WEB), desc
