"""Exponential backoff as a pure value: ``Backoff().delay(failures)`` in seconds.

Used for container (re)starts: the first failure retries after ``base``, each further one waits
``factor`` times longer, capped at ``max_delay``.  No clock and no state: callers count failures.
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
