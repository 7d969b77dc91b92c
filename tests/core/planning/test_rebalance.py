"""Table and property tests for rebalancing (pure): which instance moves where, and that moves
always end with every node within one of its fair share."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.planning.rebalance import rebalance_move
from daprdockr.core.records import InstanceRecord

WEB = ServiceName(group="myapp", service="web")
NOW = 1000.0


def spec(n: int, **kw: object) -> ServiceSpec:
    return replace(ServiceSpec(name=WEB, image="busybox", instances=n, http_port=80), **kw)  # type: ignore[arg-type]


def layout(counts: dict[str, int], *, since: float = 0.0) -> list[InstanceRecord]:
    """Instances numbered 1.. dealt to the nodes in ``counts`` order."""
    out, n = [], 0
    for node, k in counts.items():
        for _ in range(k):
            n += 1
            out.append(InstanceRecord(service=WEB, number=n, node=node, address="127.0.0.1", state="running",
                                      spec_hash=spec(1).runtime_hash, since=since))
    return out


def move(counts: dict[str, int], *, s: ServiceSpec | None = None, records: list[InstanceRecord] | None = None,
         capacity: dict[str, int] | None = None, slots: int = 0) -> tuple[str, int, str] | None:
    recs = records if records is not None else layout(counts)
    nodes = sorted(counts)
    held = {n: sum(1 for r in recs if r.node == n) for n in nodes}
    m = rebalance_move(s or spec(sum(counts.values())), recs, nodes=nodes, held_total=held,
                       capacity=capacity or {}, slots_taken=slots, wall_now=NOW)
    return None if m is None else (m.record.node, m.record.number, m.to)


@pytest.mark.parametrize(("counts", "expected"), [
    ({"n1": 8, "n2": 17, "n3": 14}, ("n2", 25, "n1")),  # the storm: the most gives its highest number to the fewest
    ({"n1": 13, "n2": 13, "n3": 13}, None),
    ({"n1": 14, "n2": 13, "n3": 12}, ("n1", 14, "n3")),
    ({"n1": 13, "n2": 13, "n3": 12}, None),  # within one: settled
    ({"n1": 6, "n2": 6, "n3": 0}, ("n1", 6, "n3")),  # a node that joined gets its share (ties: lowest id)
    ({"n1": 1, "n2": 0}, None),
    ({"n1": 5}, None),  # one node: nowhere to go
])
def test_which_instance_moves_where(counts: dict[str, int], expected: tuple[str, int, str] | None) -> None:
    assert move(counts) == expected


def test_a_service_moves_only_when_settled_and_allowed() -> None:
    counts = {"n1": 6, "n2": 6, "n3": 0}
    base = layout(counts)
    assert move(counts, records=[replace(base[0], state="starting"), *base[1:]]) is None
    assert move(counts, records=[replace(base[0], health="unhealthy"), *base[1:]]) is None
    assert move(counts, records=[replace(base[0], spec_hash="old"), *base[1:]]) is None  # a rolling update
    assert move(counts, records=base[1:], s=spec(12)) is None  # an instance is unplaced
    assert move(counts, records=layout(counts, since=NOW - 5)) is None  # cooling down
    assert move(counts, slots=1) is None  # a replacement is in flight
    assert move(counts, s=spec(12, rebalance=False)) is None
    assert move(counts, capacity={"n3": 0}) == ("n1", 6, "n3")  # 0: no limit
    assert move(counts, capacity={"n3": 0, "n2": 100}) == ("n1", 6, "n3")


def test_a_full_node_is_skipped_for_the_next_fewest() -> None:
    counts = {"n1": 10, "n2": 2, "n3": 0}
    assert move(counts, capacity={"n3": 0}) == ("n1", 10, "n3")
    recs = layout(counts)
    held = {"n1": 10, "n2": 2, "n3": 5}  # n3 runs 5 instances of other services: at its capacity of 5
    m = rebalance_move(spec(12), recs, nodes=["n1", "n2", "n3"], held_total=held, capacity={"n3": 5},
                       slots_taken=0, wall_now=NOW)
    assert m is not None and (m.record.node, m.to) == ("n1", "n2")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=60), min_size=2, max_size=8))
def test_moves_end_within_one_of_the_fair_share(sizes: list[int]) -> None:
    """Applying moves until none is left: every node within one of every other (so within one of
    the fair share), nothing lost, and never more moves than instances."""
    counts = {f"n{i}": k for i, k in enumerate(sizes)}
    total = sum(sizes)
    recs = layout(counts)
    moves = 0
    while True:
        nodes = sorted(counts)
        held = {n: sum(1 for r in recs if r.node == n) for n in nodes}
        m = rebalance_move(spec(total), recs, nodes=nodes, held_total=held, capacity={}, slots_taken=0,
                           wall_now=NOW)
        if m is None:
            break
        recs = [replace(r, node=m.to) if r.number == m.record.number else r for r in recs]
        moves += 1
        assert moves <= total
    final = [sum(1 for r in recs if r.node == n) for n in sorted(counts)]
    assert sum(final) == total and (total < 2 or max(final) - min(final) <= 1), final
    assert sorted(r.number for r in recs) == list(range(1, total + 1))
