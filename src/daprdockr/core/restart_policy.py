"""When to restart something that crashed (nginx, a DNS worker, a container): a pure policy over
immutable state.

``on_exit`` returns the delay before the next start: the backoff grows with consecutive quick
failures and resets once the thing had stayed up for ``stable_after`` seconds, and carries
``jitter`` so things that failed together do not restart together.  The caller passes the clock
value and a random number in; nothing here sleeps, reads the time or draws a random number.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from daprdockr.core.backoff import Backoff, jittered


@dataclass(frozen=True, slots=True)
class RestartState:
    failures: int = 0
    started_at: float = 0.0
    restarts: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartPolicy:
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.1, factor=2.0, max_delay=10.0))
    stable_after: float = 10.0
    jitter: float = 0.2

    def on_start(self, state: RestartState, *, now: float) -> RestartState:
        return replace(state, started_at=now)

    def on_exit(self, state: RestartState, *, now: float, rand: float = 0.5) -> tuple[RestartState, float]:
        """New state and seconds to wait before starting again (``rand`` in ``[0, 1)``: the jitter)."""
        failures = 1 if now - state.started_at >= self.stable_after else state.failures + 1
        delay = jittered(self.backoff.delay(failures), jitter=self.jitter, rand=rand)
        return replace(state, failures=failures, restarts=state.restarts + 1), delay
