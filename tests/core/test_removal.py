"""Table tests for confirmed removal's pure parts: when a container left the routes, who lags."""

from __future__ import annotations

import json

import pytest

from daprdockr.core.removal import KeyEvent, lagging, left_routing_at


def put(revision: int, cid: str, state: str = "running", health: str = "") -> KeyEvent:
    body = {"node": "n1", "address": "127.0.0.11", "state": state, "container_id": cid,
            **({"health": health} if health else {})}
    return KeyEvent(revision=revision, value=json.dumps(body).encode())


@pytest.mark.parametrize(("events", "expected"), [
    ([], 0),
    ([put(5, "c1", "starting")], 0),  # never routed
    ([put(5, "c1", "starting"), put(6, "c1"), KeyEvent(revision=9, value=None), put(12, "x9")], 9),  # lease expired
    ([put(6, "c1"), put(8, "x9"), put(10, "x9")], 8),  # taken over, then written again
    ([put(6, "c1"), put(7, "c1", "starting"), put(8, "c1"), put(9, "c1", health="unhealthy"), put(11, "x9")], 9),
    ([put(6, "c1", health="starting"), put(8, "x9")], 0),  # never healthy: never routed
    ([put(6, "c1"), KeyEvent(revision=7, value=b"{not json")], 7),  # garbage routes nothing
    ([put(9, "x9"), put(6, "c1")], 9),  # order by revision, not by arrival
    ([put(6, "c1")], 0),  # still routed: not a removal (the caller holds no such key)
])
def test_left_routing_at(events: list[KeyEvent], expected: int) -> None:
    assert left_routing_at(events, "c1") == expected


@pytest.mark.parametrize(("nodes", "applied", "expected"), [
    ({"n1": 1, "n2": 1}, {"n1": 10, "n2": 9}, ["n2"]),
    ({"n1": 1, "n2": 1}, {"n1": 10, "n2": 10}, []),
    ({"n1": 1, "n3": 11}, {"n1": 10}, []),  # n3 joined after the removal: it never routed it
    ({"n1": 1, "n3": 10}, {"n1": 10}, ["n3"]),  # joined at the removal's revision: may have routed it
    ({"n4": 0}, {}, ["n4"]),  # join revision unknown: counts
])
def test_lagging(nodes: dict[str, int], applied: dict[str, int], expected: list[str]) -> None:
    assert lagging(revision=10, nodes=nodes, applied=applied) == expected
