"""Containers Docker could not remove, removed again in the background until they go.

After a dockerd restart, overlay2 refused to remove a stopped container's root filesystem
("device or resource busy"), then answered every later try with "removal ... is already in
progress", and the instance waited behind that one container for as long as the agent retried.
The reconciler now hands such a container (or one Docker lists as ``dead`` or ``removing``) to
the reaper and starts the instance's replacement at once under a fresh name; the reaper tries the
removal again with backoff (``base`` seconds, doubling, at most ``cap``) and tells what is still
left (:meth:`pending`: the status API and the metrics show it) until it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from daprdockr.core.containers import ContainerInfo
from daprdockr.core.names import instance_order
from daprdockr.errors import DaprDockrError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Doomed:
    container: ContainerInfo
    error: str
    attempts: int = 0
    due: float = 0.0


class ContainerReaper:
    name = "reaper"

    def __init__(self, *, remove: Callable[[str], Awaitable[None]], clock: Callable[[], float] = time.monotonic,
                 base: float = 1.0, cap: float = 60.0) -> None:
        self._remove = remove
        self._clock = clock
        self.base, self.cap = base, cap
        self._doomed: dict[str, _Doomed] = {}
        self._added = asyncio.Event()
        self.removed = 0  # containers removed here in all

    def add(self, container: ContainerInfo, *, error: str) -> None:
        """Remove ``container`` in the background (again, if it is already here: its error kept)."""
        if container.id in self._doomed:
            return
        log.warning("container %s of %s/%s could not be removed (%s); its instance goes on without it, the "
                    "removal is retried in the background", container.id[:12], container.service, container.number,
                    error)
        self._doomed[container.id] = _Doomed(container=container, error=error, due=self._clock() + self.base)
        self._added.set()

    def __contains__(self, container_id: object) -> bool:
        return container_id in self._doomed

    def ids(self) -> frozenset[str]:
        """The ids of the containers waiting to be removed."""
        return frozenset(self._doomed)

    def pending(self) -> list[dict[str, object]]:
        """What is still waiting to be removed, for the status API."""
        return [{"container_id": d.container.id[:12], "service": str(d.container.service),
                 "instance": d.container.number, "attempts": d.attempts, "error": d.error}
                for d in sorted(self._doomed.values(), key=lambda d: instance_order(*d.container.key))]

    async def reap_once(self) -> float:
        """Try every removal that is due; returns the seconds until the next one is (inf: none left)."""
        now = self._clock()
        for cid, d in list(self._doomed.items()):
            if d.due > now:
                continue
            d.attempts += 1
            try:
                await self._remove(cid)
            except DaprDockrError as exc:
                d.error = str(exc)
                d.due = self._clock() + min(self.cap, self.base * 2 ** d.attempts)
                log.info("container %s still cannot be removed (try %d): %s", cid[:12], d.attempts, exc)
                continue
            del self._doomed[cid]
            self.removed += 1
            log.info("removed container %s of %s/%s after %d tries", cid[:12], d.container.service,
                     d.container.number, d.attempts)
        if not self._doomed:
            return float("inf")
        return max(0.0, min(d.due for d in self._doomed.values()) - self._clock())

    async def run(self) -> None:
        while True:
            self._added.clear()
            wait = await self.reap_once()
            with contextlib.suppress(TimeoutError):  # (not wait_for: in 3.11 it can swallow a cancellation)
                async with asyncio.timeout(None if wait == float("inf") else wait):
                    await self._added.wait()
