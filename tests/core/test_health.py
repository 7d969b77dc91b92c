"""Table tests for the health state machine (pure)."""

from __future__ import annotations

import pytest

from daprdockr.core.health import HealthState, due, observe, restart_due
from daprdockr.core.lifecycle import HealthCheck

CHECK = HealthCheck(kind="tcp", port=80, interval=2.0, retries=3, start_period=10.0, restart_unhealthy_after=30.0)


def run(results: list[bool], *, start: float = 0.0, step: float = 2.0) -> HealthState:
    state, now = HealthState(started_at=start), start
    for ok in results:
        now += step
        state = observe(state, ok=ok, now=now, check=CHECK)
    return state


@pytest.mark.parametrize(("results", "status"), [
    ([], "starting"),
    ([True], "healthy"),
    ([False, False, False], "starting"),  # inside the 10 s start period: failures do not count
    ([False] * 5 + [False] * 3, "unhealthy"),  # three failures in a row after it
    ([True, False, False], "healthy"),  # two failures: still healthy
    ([True] + [False] * 5 + [False] * 3, "unhealthy"),
    ([False] * 8 + [True], "healthy"),  # one success brings it back at once
])
def test_status_follows_results(results: list[bool], status: str) -> None:
    assert run(results).status == status


def test_due_and_restart_due() -> None:
    state = run([False] * 8)
    assert state.status == "unhealthy"
    assert not restart_due(state, now=state.since + 29, check=CHECK)
    assert restart_due(state, now=state.since + 30, check=CHECK)
    assert not due(state, now=state.checked_at + 1.9, check=CHECK) and due(state, now=state.checked_at + 2, check=CHECK)
    never = HealthCheck(kind="tcp", port=80)
    assert not restart_due(state, now=state.since + 1e6, check=never)
