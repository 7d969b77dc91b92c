"""Process plumbing shared by every long-running entry point: event loop choice and signals.

:func:`run_until_signal` runs ``main(stop)`` on uvloop when it is installed (else asyncio's own
loop) with SIGTERM and SIGINT wired to ``stop``: the first signal only sets the event, and the
program shuts down in order.  A second signal means "now": ``on_second_signal`` runs (the agent
kills its nginx process group there, so nothing is orphaned) and the process exits at once.
SIGUSR1 writes the stack of every thread to stderr (:mod:`faulthandler`), for a process that hangs.

Once ``main`` returned, the exit is bounded: tasks still running are cancelled and waited for at
most :data:`LEFTOVER_TIMEOUT` (each one that does not end is logged with its stack), and a process
still alive :data:`EXIT_GRACE` seconds later (a task that ignores its cancel, an async generator
that does not close, a thread the interpreter waits for) logs every thread's stack and leaves with
``os._exit`` and ``main``'s exit code: its shutdown was over, and nothing it left may hold it.
The agent, ``daprdockr dns`` and the DNS worker processes all start here.  :func:`kill_group`
ends a child's whole process group (the children started with ``start_new_session`` lead one).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from daprdockr.cancellation import stop_tasks

log = logging.getLogger(__name__)
LEFTOVER_TIMEOUT = 3.0
EXIT_GRACE = 10.0


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
    faulthandler.register(signal.SIGUSR1, all_threads=True)

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
        code = await main(stop)
        exit_deadline(code, after=EXIT_GRACE)
        await stop_tasks([t for t in asyncio.all_tasks() if t is not asyncio.current_task()], grace=LEFTOVER_TIMEOUT)
        return code

    return int(_runner()(wrapper()))


def exit_deadline(code: int, *, after: float) -> threading.Timer:
    """From a daemon thread: if the process still runs ``after`` seconds from now, log every
    thread's stack and exit with ``code`` at once."""

    def expire() -> None:
        log.error("still running %.0fs after the shutdown ended: exiting now (the threads' stacks follow)", after)
        for handler in logging.getLogger().handlers:
            handler.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(code)

    timer = threading.Timer(after, expire)
    timer.daemon = True
    timer.start()
    return timer


def kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (a child started with ``start_new_session``: its
    own children, nginx's workers say, go with it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
