"""TokenBucket: bursts up to ``burst``, then one token per ``interval``."""

from __future__ import annotations

import pytest

from daprdockr.core.ratelimit import TokenBucket


@pytest.mark.parametrize(
    ("burst", "interval", "takes", "now", "expected"),
    [
        (3, 1.0, [], 0.0, 0.0),  # unused: full
        (3, 1.0, [0.0, 0.0], 0.0, 0.0),  # third token still there
        (3, 1.0, [0.0, 0.0, 0.0], 0.0, 1.0),  # empty: one interval
        (3, 1.0, [0.0, 0.0, 0.0], 0.4, 0.6),  # partly refilled
        (3, 1.0, [0.0, 0.0, 0.0], 1.0, 0.0),
        (3, 1.0, [0.0, 0.0, 0.0, 1.0], 1.5, 0.5),  # sustained: one per interval
        (3, 1.0, [0.0, 0.0, 0.0], 100.0, 0.0),  # refills, never above burst
        (1, 1.0, [5.0], 5.2, 0.8),  # burst 1 = plain min interval
        (2, 0.5, [0.0, 0.0], 0.1, 0.4),
    ],
)
def test_delay(burst: int, interval: float, takes: list[float], now: float, expected: float) -> None:
    bucket = TokenBucket(burst=burst, interval=interval)
    for t in takes:
        bucket = bucket.take(now=t)
    assert bucket.delay(now=now) == pytest.approx(expected)


def test_refill_is_capped_at_burst() -> None:
    bucket = TokenBucket(burst=3, interval=1.0)
    for _ in range(3):
        bucket = bucket.take(now=0.0)
    bucket = bucket.take(now=100.0)  # refilled to 3, spent one
    assert bucket.delay(now=100.0) == 0.0
    bucket = bucket.take(now=100.0).take(now=100.0)
    assert bucket.delay(now=100.0) == pytest.approx(1.0)
