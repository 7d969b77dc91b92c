"""Exponential backoff as a pure value: ``Backoff().delay(failures)`` in seconds.

The first failure retries after ``base``, each further one waits ``factor`` times longer, capped
at ``max_delay``.  No clock and no state: callers count failures.  :func:`jittered` spreads a
delay by a fraction either way, from a random number the caller passes in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    base: float = 0.5
    factor: float = 2.0
    max_delay: float = 30.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (0 for none)."""
        if failures <= 0:
            return 0.0
        return float(min(self.max_delay, self.base * self.factor ** (failures - 1)))


def jittered(delay: float, *, jitter: float, rand: float) -> float:
    """``delay`` moved by up to ``jitter`` (a fraction) either way; ``rand`` in ``[0, 1)``, 0.5 keeps it."""
    return delay * (1.0 + jitter * (2.0 * rand - 1.0))
