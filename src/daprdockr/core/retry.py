"""Per-key retry bookkeeping for the reconciler: one table, pure values, no clock, no randomness.

Each instance key the reconciler acts on has a :class:`KeyRetry`: how often its container
crashed or failed to start in a row, how often an action on it failed on etcd or Docker in a
row, and until when it must be left alone.  :class:`RetryPolicy` turns an event (a start, a
crash, a failed action) into the next :class:`KeyRetry`; the caller passes the time and a random
number in ``[0, 1)`` for the jitter.

* A **crash** is the project's :class:`~daprdockr.core.restart_policy.RestartPolicy` (the same
  as for nginx and the DNS workers): it counts toward the restart backoff only when the
  container had run for less than ``crash.stable_after`` (by the engine's clock when the caller
  has it: an exit noticed late by a busy agent is no longer a long run): a container that crashes once a day
  restarts at once every time, a crash loop backs off up to the cap.  Only the next *start* waits (``hold="start"``), so
  a crash-looping instance that is scaled away is released at once.
* A **failed start** backs off the same way; a terminal one (an image that does not exist, a
  refused config) waits the full cap at once instead of being retried hot.
* A **failed action** (etcd or Docker unreachable, a lost compare) holds every action on the key
  (``hold="all"``) for the ``action`` backoff; the next successful action clears it.

Every delay carries ``jitter`` (a fraction, ±; the crash policy's own) so agents that failed
together do not retry together.

:class:`KeyRetries` is the table: a dict that also knows which keys were given a wait
(``not_before``), so a pass finds the keys still held in a look per such key, not per key.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import Generic, Literal, TypeVar

from daprdockr.core.backoff import Backoff, jittered
from daprdockr.core.restart_policy import RestartPolicy, RestartState


@dataclass(frozen=True, slots=True)
class KeyRetry:
    crashes: int = 0  # consecutive crashes or failed starts
    errors: int = 0  # consecutive failed actions
    not_before: float = 0.0
    hold: Literal["start", "all"] = "start"
    started_at: float | None = None  # when the container we started last came up


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    crash: RestartPolicy = field(default_factory=lambda: RestartPolicy(
        backoff=Backoff(base=0.5, max_delay=30.0), stable_after=30.0, jitter=0.2))
    action: Backoff = field(default_factory=lambda: Backoff(base=0.2, max_delay=5.0))

    def _jittered(self, delay: float, rand: float) -> float:
        return jittered(delay, jitter=self.crash.jitter, rand=rand)

    def started(self, entry: KeyRetry, *, now: float) -> KeyRetry:
        """A container of the key came up."""
        return replace(entry, started_at=now, errors=0)

    def crashed(self, entry: KeyRetry, *, now: float, rand: float, ran_for: float | None = None) -> KeyRetry:
        """The key's container exited on its own: the next start waits if it crashes in a loop.
        ``ran_for``: how long the run lasted by the engine's clock, when known; otherwise the time
        since :meth:`started` (which also counts how late the exit was noticed)."""
        started_at = now - ran_for if ran_for is not None else now if entry.started_at is None else entry.started_at
        ran = RestartState(failures=entry.crashes, started_at=started_at)
        state, delay = self.crash.on_exit(ran, now=now, rand=rand)
        return replace(entry, crashes=state.failures, not_before=now + delay, hold="start", started_at=None)

    def start_failed(self, entry: KeyRetry, *, now: float, rand: float, terminal: bool) -> KeyRetry:
        """Creating or starting the container failed."""
        crashes = entry.crashes + 1
        backoff = self.crash.backoff
        delay = backoff.max_delay if terminal else backoff.delay(crashes)
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


K = TypeVar("K", bound=Hashable)


class KeyRetries(dict[K, KeyRetry], Generic[K]):
    """Each key's :class:`KeyRetry`; remembers the keys set with a ``not_before`` (a wait)."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: set[K] = set()

    def __setitem__(self, key: K, value: KeyRetry) -> None:
        super().__setitem__(key, value)
        if value.not_before > 0:
            self._waiting.add(key)

    def waiting(self, *, now: float) -> dict[K, KeyRetry]:
        """The keys still held at ``now`` (``not_before`` in the future), with their entries; the
        keys whose wait ran out are forgotten here (they stay in the table)."""
        held = {k: e for k in self._waiting if (e := self.get(k)) is not None and e.not_before > now}
        self._waiting = set(held)
        return held
