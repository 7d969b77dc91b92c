"""The pure bookkeeping of confirmed removal on one node, as tables of steps."""

from __future__ import annotations

import pytest

from daprdockr.core.removal_tracker import RemovalTracker

# steps: ("served", revision, routed_removed, mirror_removal) | ("ack", router, revision|None)
#        | ("wrote", revision) | ("lease",)
Step = tuple[object, ...]


def run(steps: list[Step]) -> tuple[RemovalTracker, list[bool]]:
    t = RemovalTracker()
    said: list[bool] = []
    for step in steps:
        match step:
            case ("served", int(rev), bool(removed), int(mirror)):
                said.append(t.served(revision=rev, routed_removed=removed, mirror_removal=mirror))
            case ("ack", str(router), rev):
                assert rev is None or isinstance(rev, int)
                said.append(t.acknowledge(router, rev))
            case ("wrote", int(rev)):
                t.wrote(rev)
            case ("lease",):
                t.new_lease()
            case _:
                raise AssertionError(step)
    return t, said


@pytest.mark.parametrize(("steps", "applied", "due", "waiting"), [
    pytest.param([], 0, 0, False, id="nothing-served"),
    pytest.param([("served", 10, False, 0)], 0, 0, False, id="no-removal-no-write"),
    pytest.param([("served", 10, True, 0)], 10, 10, False, id="removal-no-routers-at-once"),
    pytest.param([("served", 10, False, 7)], 10, 10, False, id="etcd-says-removed-though-never-routed-here"),
    pytest.param([("served", 10, False, 7), ("served", 12, False, 7)], 10, 10, False,
                 id="same-mirror-removal-is-not-a-new-one"),
    pytest.param([("ack", "nginx", 0), ("served", 10, True, 0)], 0, 0, True, id="nginx-not-confirmed-yet"),
    pytest.param([("ack", "nginx", 0), ("served", 10, True, 0), ("ack", "nginx", 10)], 10, 10, False,
                 id="nginx-confirmed"),
    pytest.param([("ack", "nginx", 0), ("served", 10, True, 0), ("ack", "nginx", 14)], 10, 10, False,
                 id="a-router-ahead-counts-as-the-removal"),
    pytest.param([("ack", "nginx", 10), ("ack", "dns-workers", 8), ("served", 10, True, 0)], 8, 8, True,
                 id="oldest-router-decides"),
    pytest.param([("ack", "dns-workers", 3), ("served", 10, True, 0), ("ack", "dns-workers", None)], 10, 10, False,
                 id="router-with-nothing-serving-counts-no-more"),
    pytest.param([("served", 10, True, 0), ("wrote", 10)], 10, 0, False, id="written-is-not-due-again"),
    pytest.param([("served", 10, True, 0), ("wrote", 10), ("lease",)], 10, 10, False,
                 id="new-lease-writes-again"),
    pytest.param([("served", 10, True, 0), ("wrote", 10), ("served", 15, True, 0)], 15, 15, False,
                 id="a-newer-removal-is-due"),
    pytest.param([("ack", "nginx", 0), ("served", 10, True, 0), ("ack", "nginx", 10), ("wrote", 10),
                  ("ack", "dns-workers", 0)], 0, 0, True, id="a-new-worker-holds-the-next-write-back"),
])
def test_applied_and_due(steps: list[Step], applied: int, due: int, waiting: bool) -> None:
    t, _ = run(steps)
    assert (t.applied, t.due(), t.waiting) == (applied, due, waiting)


@pytest.mark.parametrize(("steps", "said"), [
    pytest.param([("served", 10, True, 0), ("served", 11, False, 0)], [True, False], id="served-says-removal"),
    pytest.param([("served", 4, False, 3), ("served", 6, False, 5)], [True, True], id="each-new-mirror-removal"),
    pytest.param([("ack", "nginx", 0)], [False], id="ack-before-any-removal-wakes-nobody"),
    pytest.param([("ack", "nginx", 0), ("served", 10, True, 0), ("ack", "nginx", 9), ("ack", "nginx", 10)],
                 [False, True, True, True], id="ack-wakes-when-a-write-is-due"),
    pytest.param([("ack", "nginx", 0), ("ack", "dns-workers", 0), ("served", 10, True, 0), ("ack", "nginx", 10)],
                 [False, False, True, True], id="ack-wakes-though-another-router-lags"),
    pytest.param([("served", 10, True, 0), ("wrote", 10), ("ack", "nginx", 10)], [True, False],
                 id="ack-of-what-was-written-wakes-nobody"),
])
def test_what_wakes_the_publisher(steps: list[Step], said: list[bool]) -> None:
    assert run(steps)[1] == said
