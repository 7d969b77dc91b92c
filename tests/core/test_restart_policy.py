"""Table tests for the pure restart policy."""

from __future__ import annotations

import pytest

from daprdockr.core.backoff import Backoff
from daprdockr.core.restart_policy import RestartPolicy, RestartState

POLICY = RestartPolicy(backoff=Backoff(base=0.1, factor=2.0, max_delay=1.0), stable_after=10.0)


@pytest.mark.parametrize(
    ("state", "now", "failures", "delay"),
    [
        (RestartState(failures=0, started_at=0.0), 1.0, 1, 0.1),  # first quick crash
        (RestartState(failures=1, started_at=0.0), 1.0, 2, 0.2),
        (RestartState(failures=3, started_at=0.0), 1.0, 4, 0.8),
        (RestartState(failures=9, started_at=0.0), 1.0, 10, 1.0),  # capped
        (RestartState(failures=9, started_at=0.0), 10.0, 1, 0.1),  # was stable: reset
    ],
)
def test_on_exit(state: RestartState, now: float, failures: int, delay: float) -> None:
    new, wait = POLICY.on_exit(state, now=now)
    assert (new.failures, wait, new.restarts) == (failures, pytest.approx(delay), state.restarts + 1)


def test_on_start_records_time() -> None:
    assert POLICY.on_start(RestartState(failures=2), now=5.0) == RestartState(failures=2, started_at=5.0)


@pytest.mark.parametrize(("failures", "delay"), [(0, 0.0), (1, 0.5), (2, 1.0), (7, 30.0), (100, 30.0)])
def test_backoff(failures: int, delay: float) -> None:
    assert Backoff().delay(failures) == delay


@pytest.mark.parametrize(("rand", "factor"), [(0.0, 0.8), (0.5, 1.0), (0.999999, 1.2)])
def test_restart_delays_carry_jitter(rand: float, factor: float) -> None:
    """nginx and DNS-worker restarts are spread too (agents whose children died together)."""
    policy = RestartPolicy(backoff=Backoff(base=1.0, max_delay=8.0), stable_after=10.0, jitter=0.2)
    _, wait = policy.on_exit(RestartState(failures=1, started_at=0.0), now=1.0, rand=rand)  # second: 2.0 s
    assert wait == pytest.approx(2.0 * factor, rel=1e-4)
