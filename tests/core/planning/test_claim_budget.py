"""A pass plans at most its claim budget (the claims the reconciler may still have in flight),
the first claims of the unlimited plan, and still converges to every number owned once; the
unowned-since times kept per changed service equal the ones rebuilt from every unowned key."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from daprdockr.core.instance_index import IndexBuilder
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.planning.actions import Claim, Key
from daprdockr.core.planning.claims import track_unowned_since
from daprdockr.core.planning.observed import Observed
from daprdockr.core.planning.plan import plan
from daprdockr.core.records import InstanceRecord, NodeRecord
from daprdockr.core.state import ClusterState


def spec(i: int, instances: int) -> ServiceSpec:
    return ServiceSpec.from_dict({"image": "busybox", "instances": instances}, name=ServiceName.parse(f"s{i}.g"))


NODES = {n: NodeRecord(node_id=n, address="127.0.0.11", lease=i + 1) for i, n in enumerate(["n0", "n1", "n2"])}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 120), min_size=1, max_size=12), st.integers(1, 40))
def test_a_pass_claims_at_most_its_budget_and_the_cluster_still_converges(sizes: list[int], budget: int) -> None:
    desired = {s.name: s for s in (spec(i, n) for i, n in enumerate(sizes))}
    builder = IndexBuilder()
    for _ in range(10 * (sum(sizes) // budget + 2)):
        progressed = False
        for lease, node in enumerate(NODES, start=1):
            state = ClusterState(services=desired, instances=builder.snapshot(), nodes=NODES)
            obs = Observed(node_id=node, lease=lease, now=10.0, instances=state.instances, nodes=NODES,
                           containers=[], unowned=state.unowned)
            full = [a for a in plan(desired, obs) if isinstance(a, Claim)]
            bounded = [a for a in plan(desired, replace(obs, claim_budget=budget)) if isinstance(a, Claim)]
            assert bounded == full[:budget]
            for a in bounded:
                if builder.get(a.key) is None:
                    builder.put(InstanceRecord(service=a.key[0], number=a.key[1], node=node, address="127.0.0.11",
                                               state="starting", lease=lease))
                    progressed = True
        if not progressed:
            break
    owned = builder.snapshot()
    assert {k for k in owned} == {(s.name, n) for s in desired.values() for n in range(1, s.instances + 1)}
    empty = ClusterState(services=desired, instances={}, nodes=NODES)
    none = Observed(node_id="n0", lease=1, now=10.0, instances=empty.instances, nodes=NODES, containers=[],
                    claim_budget=0)
    assert not [a for a in plan(desired, none) if isinstance(a, Claim)]  # (an exhausted budget claims nothing)


unowned_maps = st.lists(st.dictionaries(st.sampled_from([ServiceName.parse(f"s{i}.g") for i in range(4)]),
                                        st.sets(st.integers(1, 8), min_size=1).map(lambda s: tuple(sorted(s))),
                                        max_size=4), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(unowned_maps)
def test_unowned_since_kept_per_changed_service_equals_a_rebuild(maps: list[dict[ServiceName, tuple[int, ...]]]
                                                                ) -> None:
    since: dict[Key, float] = {}
    rebuilt: dict[Key, float] = {}
    seen: dict[ServiceName, tuple[int, ...]] = {}
    for now, unowned in enumerate(maps):
        shared = {name: seen[name] if seen.get(name) == numbers else numbers for name, numbers in unowned.items()}
        track_unowned_since(since, seen=seen, unowned=shared, now=float(now))
        rebuilt = {(name, n): rebuilt.get((name, n), float(now)) for name, numbers in shared.items() for n in numbers}
        seen = shared
        assert since == rebuilt
