"""Table tests for the per-key retry policy (pure: time and randomness are passed in)."""

from __future__ import annotations

import pytest

from daprdockr.core.backoff import Backoff
from daprdockr.core.restart_policy import RestartPolicy
from daprdockr.core.retry import KeyRetry, RetryPolicy

POLICY = RetryPolicy(crash=RestartPolicy(backoff=Backoff(base=0.5, max_delay=30.0), stable_after=30.0, jitter=0.2),
                     action=Backoff(base=0.2, max_delay=5.0))


def test_rare_crashes_never_grow_the_backoff() -> None:
    entry, now = KeyRetry(), 0.0
    for _ in range(20):  # start, run a day, crash
        entry = POLICY.started(entry, now=now)
        now += 86_400
        entry = POLICY.crashed(entry, now=now, rand=0.5)
        assert entry.crashes == 1 and entry.not_before - now == pytest.approx(0.5)
        assert entry.hold == "start"


def test_a_crash_loop_backs_off_to_the_cap() -> None:
    entry, now, delays = KeyRetry(), 0.0, []
    for _ in range(10):
        entry = POLICY.started(entry, now=now)
        now += 1.0  # crashes a second after each start
        entry = POLICY.crashed(entry, now=now, rand=0.5)
        delays.append(entry.not_before - now)
    assert delays[:4] == pytest.approx([0.5, 1.0, 2.0, 4.0])
    assert delays[-1] == pytest.approx(30.0)


@pytest.mark.parametrize(("rand", "factor"), [(0.0, 0.8), (0.5, 1.0), (0.999999, 1.2)])
def test_delays_carry_jitter_within_bounds(rand: float, factor: float) -> None:
    entry = POLICY.crashed(KeyRetry(crashes=2), now=10.0, rand=rand)  # third crash: 2.0 s
    assert entry.not_before - 10.0 == pytest.approx(2.0 * factor, rel=1e-4)


def test_terminal_start_failure_waits_the_cap_at_once() -> None:
    entry = POLICY.start_failed(KeyRetry(), now=0.0, rand=0.5, terminal=True)
    assert entry.not_before == pytest.approx(30.0)
    transient = POLICY.start_failed(KeyRetry(), now=0.0, rand=0.5, terminal=False)
    assert transient.not_before == pytest.approx(0.5)


def test_failed_actions_hold_the_key_and_clear_on_success() -> None:
    entry = KeyRetry()
    for expected in (0.2, 0.4, 0.8):
        entry = POLICY.action_failed(entry, now=0.0, rand=0.5)
        assert entry.hold == "all" and entry.not_before == pytest.approx(expected)
    entry = POLICY.action_ok(entry)
    assert entry.errors == 0 and entry.not_before == 0.0 and entry.hold == "start"


def test_action_failure_never_shortens_a_crash_hold() -> None:
    crashed = POLICY.crashed(KeyRetry(crashes=6), now=0.0, rand=0.5)  # 30 s
    held = POLICY.action_failed(crashed, now=0.0, rand=0.5)
    assert held.not_before == pytest.approx(30.0)


@pytest.mark.parametrize(
    ("started_at", "ran_for", "crashes"),
    [
        (0.0, 0.05, 3),  # noticed 40 s after our start, but the engine says it ran 50 ms: a crash loop
        (0.0, None, 1),  # no engine times: the time since our start (40 s) counts as a healthy run
        (39.0, 35.0, 1),  # ran 35 s by the engine's clock (started before this agent saw it): healthy
        (None, 0.2, 3),  # an exit this agent never saw start: the engine's times still tell
    ],
)
def test_a_crash_counts_by_how_long_the_engine_says_it_ran(
    started_at: float | None, ran_for: float | None, crashes: int
) -> None:
    entry = KeyRetry(crashes=2, started_at=started_at)
    after = POLICY.crashed(entry, now=40.0, rand=0.5, ran_for=ran_for)
    assert after.crashes == crashes and after.started_at is None
