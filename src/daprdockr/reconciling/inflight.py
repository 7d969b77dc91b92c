"""The actions running now: one task per instance key, and the claims among them.

A pass of the reconciler leaves a key alone while its task runs (:meth:`InflightActions.busy`),
and starts at most so many claims at a time (:attr:`InflightActions.claims`).
:meth:`InflightActions.exclusive` runs an operator's work (a restart) as a key's action.  Each
task that ends says so through ``on_done`` (the reconciler lists its containers again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TypeVar

from daprdockr.core.planning.actions import Key
from daprdockr.errors import ConflictError, DaprDockrError

log = logging.getLogger(__name__)
T = TypeVar("T")


class InflightActions:
    """The running action task of each instance key (see the module docstring)."""

    def __init__(self, *, on_done: Callable[[], None]) -> None:
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._claims: set[Key] = set()  # keys whose claim is in flight
        self._on_done = on_done

    @property
    def claims(self) -> int:
        """How many claims are in flight."""
        return len(self._claims)

    def busy(self) -> frozenset[Key]:
        """The keys whose action runs now."""
        return frozenset(k for k, t in self._tasks.items() if not t.done())

    def holds(self, key: Key) -> bool:
        task = self._tasks.get(key)
        return task is not None and not task.done()

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks.values())

    def start(self, key: Key, work: Coroutine[object, object, None], *, name: str,
              claim: bool) -> asyncio.Task[None]:
        """Run ``work`` as ``key``'s action (a claim among them when ``claim``)."""
        task = asyncio.create_task(work, name=name)
        self._tasks[key] = task
        if claim:
            self._claims.add(key)
        task.add_done_callback(lambda t: self._done(key, t))
        return task

    async def exclusive(self, key: Key, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` as ``key``'s action (an operator's restart of the instance): passes leave
        the key alone while it runs (busy, as for a planned action).  ConflictError if an action
        on ``key`` runs already; ``work`` goes on if the caller is cancelled (shielded), as a
        planned action would."""
        if self.holds(key):
            raise ConflictError(f"an action on instance {key[1]} of {key[0]} is running; try again")
        outcome: list[T] = []
        failure: list[DaprDockrError] = []

        async def run() -> None:
            try:
                outcome.append(await work())
            except DaprDockrError as exc:
                failure.append(exc)

        await asyncio.shield(self.start(key, run(), name=f"instance {key[0]}/{key[1]} (operator)", claim=False))
        if failure:
            raise failure[0]
        return outcome[0]

    def _done(self, key: Key, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
            self._claims.discard(key)
        if not task.cancelled() and task.exception() is not None:
            log.error("action for %s/%s crashed", key[0], key[1], exc_info=task.exception())
        self._on_done()
