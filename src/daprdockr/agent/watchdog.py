"""The ``watchdog`` component: tells systemd the agent's event loop is alive, and what it does.

Its root task sends ``WATCHDOG=1`` every half ``WATCHDOG_USEC`` (:mod:`daprdockr.adapters.sdnotify`)
from the agent's own event loop, so a blocked loop stops the pings and systemd restarts the
agent; a changed ``STATUS=`` line (``serving N instances``) goes with the next ping.  Without a
watchdog it only refreshes the status, every :data:`STATUS_EVERY` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from daprdockr.adapters.sdnotify import Notifier

STATUS_EVERY = 2.0


class Watchdog:
    name = "watchdog"

    def __init__(self, *, notifier: Notifier, status: Callable[[], str]) -> None:
        self.notifier = notifier
        self.status = status
        self.period = notifier.watchdog or STATUS_EVERY
        self.pings = 0
        self._said = ""

    async def start(self) -> None:
        self._said = ""

    def ping_once(self) -> None:
        """One message: ``WATCHDOG=1`` (when systemd watches) and the status if it changed."""
        lines = ["WATCHDOG=1"] if self.notifier.watchdog else []
        status = self.status()
        if status != self._said:
            lines.append(f"STATUS={status}")
        if lines and self.notifier.notify(*lines):
            self._said = status
            self.pings += bool(self.notifier.watchdog)

    async def run(self) -> None:
        while True:
            self.ping_once()
            await asyncio.sleep(self.period)

    async def stop(self) -> None:
        """Nothing to release: the task is cancelled with the others."""
