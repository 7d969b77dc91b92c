"""The node's lease kept alive from a thread of its own, so a busy agent loop does not make it late.

The agent's event loop does the work of every watch event.  On a loaded host, or while a very large
cluster converges, that loop can be seconds late; a keepalive sent from it is late too, the lease
expires, every claim of the node goes with it, and every agent's loop gets busier still (hollow
agents with many instances on a loaded host lost their leases again and again and never recovered:
BENCHMARKS.md, "Scale: the cost of one event at 1k, 10k and 100k instances").  :class:`LeaseKeeper`
refreshes the lease at TTL/3 from a daemon thread that runs its own event loop and its own etcd
client, and keeps doing so only while the agent's loop checks in (:meth:`LeaseKeeper.touch`) at
least every ``stall_limit`` seconds: an agent whose loop is truly stuck still loses its lease, and
its instances move.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from daprdockr.cancellation import owner_cancelled, within
from daprdockr.errors import DaprDockrError, LeaseLostError

log = logging.getLogger(__name__)


class KeepaliveStore(Protocol):
    async def keepalive(self, lease_id: int, *, attempt_timeout: float | None = None) -> int: ...


class LeaseKeeper:
    """Keeps the lease :meth:`track` names alive from its own thread (see the module docstring).

    Read from the agent's loop: ``last_ok`` (the monotonic time of the last refresh that etcd
    confirmed), ``lost`` (a lease etcd said is gone), ``running`` (the thread is up).
    """

    def __init__(self, *, connect: Callable[[], AbstractAsyncContextManager[KeepaliveStore]], ttl: int,
                 stall_limit: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._connect = connect
        self.ttl = ttl
        self.stall_limit = stall_limit if stall_limit is not None else 3.0 * ttl
        self.clock = clock
        self.interval = max(0.2, ttl / 3)
        self.attempt_timeout = max(0.3, ttl / 5)
        # (plain attributes: each is one reference swapped whole, so the two threads need no lock)
        self.lease = 0
        self.touched = clock()
        self.last_ok = 0.0
        self.lost = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the thread's own loop, once it runs
        self._woken: asyncio.Event | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def track(self, lease: int) -> None:
        """Keep ``lease`` alive from now on (0: none, e.g. before a revoke)."""
        self.lease = lease
        self.touch()

    def touch(self) -> None:
        """The agent's loop is alive: keep renewing for another ``stall_limit`` seconds."""
        self.touched = self.clock()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="lease keeper", daemon=True)
            self._thread.start()

    def stop(self, *, timeout: float = 2.0) -> None:
        """Stop renewing and end the thread (bounded; it is a daemon thread either way)."""
        self.lease = 0
        self._stop.set()
        loop, woken = self._loop, self._woken
        if loop is not None and woken is not None:
            with contextlib.suppress(RuntimeError):  # (its loop already closed)
                loop.call_soon_threadsafe(woken.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception:
            log.exception("the lease keeper thread ended; the agent's loop keeps the lease alive itself")

    async def _run(self) -> None:
        self._woken = asyncio.Event()  # (set from the agent's thread by stop(): ends a pause at once)
        self._loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            try:
                async with self._connect() as store:
                    while not self._stop.is_set():
                        await self.keep_once(store)
                        await self._pause(self.interval if not self.failures else min(0.5, self.interval))
            except DaprDockrError as exc:  # (connecting failed: try again)
                log.info("lease keeper: %s; connecting again", exc)
                await self._pause(0.5)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less once :meth:`stop` was called."""
        if self._woken is not None and not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await within(self._woken.wait(), seconds)

    async def keep_once(self, store: KeepaliveStore) -> bool:
        """One refresh of the tracked lease, if the agent's loop checked in recently enough;
        returns whether etcd confirmed one."""
        lease = self.lease
        if not lease or lease == self.lost:
            return False
        if self.clock() - self.touched > self.stall_limit:
            log.warning("the agent's loop has not checked in for %.1fs: no longer renewing lease %x",
                        self.clock() - self.touched, lease)
            return False
        try:
            await store.keepalive(lease, attempt_timeout=self.attempt_timeout)
        except LeaseLostError:
            self.lost = lease
            return False
        except (DaprDockrError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and owner_cancelled():
                raise  # (ours: the thread's loop is ending; else grpc ended the call with its channel)
            self.failures += 1
            log.debug("lease keeper: keepalive of %x failed (%r)", lease, exc)
            return False
        self.last_ok = self.clock()
        self.failures = 0
        return True
