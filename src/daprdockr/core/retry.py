"""Per-key retry bookkeeping for the reconciler: one table, pure values, no clock, no randomness.

Each instance key the reconciler acts on has a :class:`KeyRetry`: how often its container
crashed or failed to start in a row, how often an action on it failed on etcd or Docker in a
row, and until when it must be left alone.  :class:`RetryPolicy` turns an event (a start, a
crash, a failed action) into the next :class:`KeyRetry`; the caller passes the time and a random
number in ``[0, 1)`` for the jitter.

* A **crash** counts toward the restart backoff only when the container had run for less than
  ``healthy_after``: a container that crashes once a day restarts at once every time, a crash
  loop backs off up to ``crash.max_delay``.  Only the next *start* waits (``hold="start"``), so
  a crash-looping instance that is scaled away is released at once.
* A **failed start** backs off the same way; a terminal one (an image that does not exist, a
  refused config) waits the full ``crash.max_delay`` at once instead of being retried hot.
* A **failed action** (etcd or Docker unreachable, a lost compare) holds every action on the key
  (``hold="all"``) for the ``action`` backoff; the next successful action clears it.

Every delay carries ``jitter`` (a fraction, ±) so agents that failed together do not retry
together.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from daprdockr.core.backoff import Backoff


@dataclass(frozen=True, slots=True)
class KeyRetry:
    crashes: int = 0  # consecutive crashes or failed starts
    errors: int = 0  # consecutive failed actions
    not_before: float = 0.0
    hold: Literal["start", "all"] = "start"
    started_at: float | None = None  # when the container we started last came up


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    crash: Backoff = field(default_factory=lambda: Backoff(base=0.5, max_delay=30.0))
    action: Backoff = field(default_factory=lambda: Backoff(base=0.2, max_delay=5.0))
    healthy_after: float = 30.0
    jitter: float = 0.2

    def _jittered(self, delay: float, rand: float) -> float:
        return delay * (1.0 + self.jitter * (2.0 * rand - 1.0))

    def started(self, entry: KeyRetry, *, now: float) -> KeyRetry:
        """A container of the key came up."""
        return replace(entry, started_at=now, errors=0)

    def crashed(self, entry: KeyRetry, *, now: float, rand: float) -> KeyRetry:
        """The key's container exited on its own: the next start waits if it crashes in a loop."""
        healthy = entry.started_at is not None and now - entry.started_at >= self.healthy_after
        crashes = 1 if healthy else entry.crashes + 1
        delay = self._jittered(self.crash.delay(crashes), rand)
        return replace(entry, crashes=crashes, not_before=now + delay, hold="start", started_at=None)

    def start_failed(self, entry: KeyRetry, *, now: float, rand: float, terminal: bool) -> KeyRetry:
        """Creating or starting the container failed."""
        crashes = entry.crashes + 1
        delay = self.crash.max_delay if terminal else self.crash.delay(crashes)
        return replace(entry, crashes=crashes, not_before=now + self._jittered(delay, rand), hold="start")

    def action_failed(self, entry: KeyRetry, *, now: float, rand: float) -> KeyRetry:
        """An action on the key failed on etcd or Docker: leave the key alone for a while."""
        errors = entry.errors + 1
        delay = self._jittered(self.action.delay(errors), rand)
        return replace(entry, errors=errors, not_before=max(entry.not_before, now + delay), hold="all")

    def action_ok(self, entry: KeyRetry) -> KeyRetry:
        """An action on the key went through: no more holding back for errors (crash backoff stays)."""
        if entry.hold == "all":
            return replace(entry, errors=0, not_before=0.0, hold="start")
        return replace(entry, errors=0)
