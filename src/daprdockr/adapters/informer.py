"""The informer: list, watch from the list's revision, resync.  One for every reader of etcd.

The agent, ``daprdockr dns``, ``svc set --wait``, ``ps -w`` and ``watch`` all keep a local view of
the cluster the same way (client-go's informer, in small): :meth:`Informer.list_once` reads the
whole prefix at one revision into a pure :class:`~daprdockr.core.mirror.StateMirror`;
:meth:`Informer.run` watches from the revision after it and applies each event; a ``resync``
from the watch (it reconnected, or its start revision was compacted) lists again and watches anew
from the revision after that list.  Every change
calls ``on_change``, level-triggered: consumers re-read :attr:`Informer.state` and never depend on
seeing every event.

:meth:`Informer.apply` is also the explicit path for the agent's own confirmed writes
(read-your-writes): the reconciler hands the event its write produced here after the store call
returned, outside the store's timed and retried etcd operation.

Malformed keys are logged once each (the mirror hands each bad value out once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, Callable
from typing import Protocol

from daprdockr.cancellation import within as bounded
from daprdockr.core.backoff import Backoff
from daprdockr.core.keys import KeySchema
from daprdockr.core.mirror import StateMirror, WatchEvent
from daprdockr.core.state import ClusterState, RawKV
from daprdockr.errors import DaprDockrError

log = logging.getLogger(__name__)
LIST_BACKOFF = Backoff(base=0.1, max_delay=1.0)


class WatchedStore(Protocol):
    """What the informer reads (:class:`~daprdockr.adapters.etcd_store.EtcdStore`)."""

    @property
    def schema(self) -> KeySchema: ...

    async def read_prefix(self, prefix: str) -> tuple[list[RawKV], int]: ...

    def watch(
        self, prefix: str | None = None, *, start_revision: int | None = None,
    ) -> AsyncGenerator[WatchEvent, None]: ...


class Informer:
    def __init__(self, *, store: WatchedStore, on_change: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.mirror = StateMirror(schema=store.schema)
        self.on_change = on_change
        self.changed = asyncio.Event()  # set on every change; :meth:`states` waits on it

    @property
    def state(self) -> ClusterState:
        return self.mirror.state()

    @property
    def revision(self) -> int:
        return self.mirror.revision

    def _changed(self) -> None:
        for key, reason in self.mirror.new_problems():
            log.warning("skipping malformed etcd key %s: %s", key, reason)
        self.changed.set()
        self.on_change()

    async def list_once(self) -> None:
        """Read every key under the prefix, at one revision."""
        kvs, revision = await self.store.read_prefix(self.store.schema.root)
        self.mirror.reset(kvs, revision=revision)
        self._changed()

    def apply(self, ev: WatchEvent) -> bool:
        """One event (from the watch, or of our own confirmed write); False if it changed nothing."""
        if not self.mirror.apply(ev):
            return False
        self._changed()
        return True

    async def _list(self) -> None:
        """:meth:`list_once` until it works: etcd being unreachable is the normal case to ride out
        here (with the watch's own short, jittered backoff), not a failure of the task."""
        failures = 0
        while True:
            try:
                await self.list_once()
                return
            except DaprDockrError as exc:
                if not exc.transient:
                    raise
                failures += 1
                delay = LIST_BACKOFF.delay(failures) * (0.5 + random.random())
                log.warning("listing etcd failed (%s); again in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    async def run(self) -> None:
        """List, then follow the watch forever (each start lists again: nothing is assumed).

        A ``resync`` lists again and starts a new watch from the revision after that list: after
        a compaction the old watch would go on from whatever revision etcd had when it reopened,
        and miss the writes between the list and then."""
        await self._list()
        while True:
            async with contextlib.aclosing(self.store.watch(start_revision=self.mirror.revision + 1)) as events:
                async for ev in events:
                    if ev.kind == "resync":
                        await self._list()
                        break
                    self.apply(ev)
                else:
                    return  # (a store's watch that ends: only fakes do)

    async def wait_for(self, ready: Callable[[ClusterState], bool], *, within: float, poll: float = 0.1) -> bool:
        """With the informer running elsewhere: until ``ready(state)`` holds, checked on every change
        and at least every ``poll`` seconds (``ready`` may look at more than etcd); False after
        ``within`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not ready(self.mirror.state()):
            left = deadline - loop.time()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await bounded(self.changed.wait(), min(left, poll))
        return True

    async def follow(self, step: Callable[[ClusterState], bool], *, within: float) -> bool:
        """Run the informer and call ``step`` with the state after the first list and after every
        change, until it returns True; False after ``within`` seconds (a CLI's ``--wait``)."""
        async def until_done() -> None:
            async with contextlib.aclosing(self.states()) as states:  # (its informer task ends with it)
                async for state in states:
                    if step(state):
                        return

        try:
            await bounded(until_done(), within)
        except TimeoutError:
            return False
        return True

    async def states(self) -> AsyncGenerator[ClusterState, None]:
        """The state after the first list, then again after every change (bursts coalesce).

        Runs the informer meanwhile; its failure (etcd unreachable) is raised here.
        """
        self.changed.clear()
        task = asyncio.create_task(self.run(), name="informer")
        try:
            while True:
                changed = asyncio.create_task(self.changed.wait())
                done, _ = await asyncio.wait({changed, task}, return_when=asyncio.FIRST_COMPLETED)
                if task in done:
                    changed.cancel()
                    task.result()
                    return
                self.changed.clear()
                yield self.mirror.state()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
