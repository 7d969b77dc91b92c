"""Process plumbing shared by every long-running entry point: event loop choice and signals.

:func:`run_until_signal` runs ``main(stop)`` on uvloop when it is installed (else asyncio's own
loop) with SIGTERM and SIGINT wired to ``stop``: the first signal only sets the event, and the
program shuts down in order.  A second signal means "now": ``on_second_signal`` runs (the agent
kills its nginx process group there, so nothing is orphaned) and the process exits at once.
The agent, ``daprdockr dns`` and the DNS worker processes all start here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


def _runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    run: Callable[[Coroutine[Any, Any, int]], int] = uvloop.run
    return run


def run_until_signal(
    main: Callable[[asyncio.Event], Awaitable[int]],
    *,
    on_second_signal: Callable[[], None] = lambda: None,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> int:
    """Run ``main(stop)`` until it returns; the first signal sets ``stop``, a second one exits."""

    async def wrapper() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        count = 0

        def on_signal(signum: int) -> None:
            nonlocal count
            count += 1
            if count == 1:
                stop.set()
                return
            log.warning("second signal: exiting now")
            try:
                on_second_signal()
            finally:
                os._exit(128 + signum)

        for sig in signals:
            loop.add_signal_handler(sig, on_signal, sig)
        return await main(stop)

    return int(_runner()(wrapper()))
