"""Planner properties at large sizes, through the indexes the mirror keeps (as the agent runs it).

Random clusters (up to 40 nodes, 30 services, 12 000 instances, capacities): every node plans in
turn and its claims are applied as etcd would (first wins).  After the rounds every desired
number is owned exactly once, each node holds at most the fair share of each service (within
one of it where no capacity limits), and the plan from the per-event indexes equals the plan
from a plain mapping (the slow path that computes everything from ``desired``).
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from daprdockr.core.instance_index import IndexBuilder
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.planning.actions import Claim
from daprdockr.core.planning.observed import Observed
from daprdockr.core.planning.placement import fair_share
from daprdockr.core.planning.plan import plan
from daprdockr.core.planning.rebalance import EvenCache
from daprdockr.core.records import InstanceRecord, NodeRecord
from daprdockr.core.state import ClusterState


def _spec(i: int, instances: int) -> ServiceSpec:
    return ServiceSpec.from_dict({"image": "busybox", "instances": instances}, name=ServiceName.parse(f"s{i}.g"))


def converge(node_count: int, sizes: list[int], *, rounds: int = 4,
             slow_too: bool = True) -> tuple[ClusterState, dict[ServiceName, ServiceSpec]]:
    ids = [f"n{i:02d}" for i in range(node_count)]
    node_records = {n: NodeRecord(node_id=n, address="127.0.0.11", lease=i + 1) for i, n in enumerate(ids)}
    desired = {s.name: s for s in (_spec(i, n) for i, n in enumerate(sizes))}
    builder = IndexBuilder()
    even = EvenCache()
    for _ in range(rounds):
        for i, node in enumerate(ids):
            state = ClusterState(services=desired, instances=builder.snapshot(), nodes=node_records)
            fast = Observed(node_id=node, lease=i + 1, now=10.0, instances=state.instances, nodes=node_records,
                            containers=[], unowned=state.unowned, even=even)
            actions = plan(desired, fast)
            if slow_too:
                slow = Observed(node_id=node, lease=i + 1, now=10.0, instances=dict(state.instances),
                                nodes=node_records, containers=[])
                assert actions == plan(desired, slow)
            for a in actions:
                if isinstance(a, Claim) and builder.get(a.key) is None:
                    builder.put(InstanceRecord(service=a.key[0], number=a.key[1], node=node, address="127.0.0.11",
                                               state="starting", lease=i + 1))
    return ClusterState(services=desired, instances=builder.snapshot(), nodes=node_records), desired


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.lists(st.integers(0, 400), min_size=1, max_size=30))
def test_every_number_is_owned_once_and_spread_within_one_of_the_fair_share(node_count: int, sizes: list[int]) -> None:
    state, desired = converge(node_count, sizes)
    assert not state.unowned
    for name, spec in desired.items():
        numbers = sorted(state.index.of_service(name))
        assert numbers == list(range(1, spec.instances + 1))  # (a dict key: owned once)
        counts = Counter(r.node for r in state.index.of_service(name).values())
        share = fair_share(spec.instances, node_count)
        assert max(counts.values(), default=0) <= share
        assert spec.instances - sum(counts.values()) == 0
        every = [counts.get(f"n{i:02d}", 0) for i in range(node_count)]
        assert max(every) - min(every) <= 1


def test_ten_thousand_instances_on_a_hundred_nodes() -> None:
    state, _ = converge(100, [100] * 100, rounds=2, slow_too=False)
    assert len(state.instances) == 10_000 and not state.unowned
    per_node = Counter(r.node for r in state.instances.values())
    assert set(per_node.values()) == {100}
