"""A token bucket as a pure value: bursts are allowed, the sustained rate is bounded.

The DNS responder's response rate limiting keeps one per client network
(:mod:`daprdockr.core.dns.guard`): a burst of up to ``burst`` answers, then one per ``interval``
seconds.  Nothing here reads the clock: callers pass ``now`` and keep the returned value.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenBucket:
    burst: int = 3
    interval: float = 1.0  # seconds per token when the bucket is empty
    tokens: float = -1.0  # < 0: full (not used yet)
    updated: float = 0.0

    def _level(self, now: float) -> float:
        if self.tokens < 0:
            return float(self.burst)
        refill = (now - self.updated) / self.interval if self.interval > 0 else float(self.burst)
        return min(float(self.burst), self.tokens + max(0.0, refill))

    def delay(self, *, now: float) -> float:
        """Seconds until one token is available (0 if one is available now)."""
        level = self._level(now)
        return 0.0 if level >= 1.0 else (1.0 - level) * self.interval

    def take(self, *, now: float) -> TokenBucket:
        """The bucket after spending one token at ``now`` (may go below one: callers wait first)."""
        return replace(self, tokens=max(0.0, self._level(now) - 1.0), updated=now)
