"""Task supervision: named, guarded root tasks.

:func:`guarded` wraps a long-running coroutine factory so that an unexpected exception is
logged and the task restarted with backoff instead of ending the agent.  Only
the agent's own cancellation (shutdown: ``task.cancel()``, seen as ``Task.cancelling() > 0``)
ends a root task.  A ``CancelledError`` raised inside a library (grpc.aio ends in-flight calls
with one when a channel closes) is a transient failure like any other: logged, restarted with
backoff.  ``status`` records the state of each task for ``/healthz``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from daprdockr.cancellation import owner_cancelled
from daprdockr.core.backoff import Backoff

log = logging.getLogger(__name__)
STABLE_AFTER = 30.0  # a task that ran this long before failing restarts after the base delay again


class TaskStatus:
    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self.restarts: dict[str, int] = {}

    def not_running(self) -> list[str]:
        """Names of root tasks that are not running (restarting after a failure, or stopped)."""
        return sorted(name for name, state in self.state.items() if state != "running")


async def guarded(
    name: str,
    factory: Callable[[], Awaitable[None]],
    *,
    status: TaskStatus,
    backoff: Backoff | None = None,
) -> None:
    """Run ``factory()`` until the task is cancelled; restart it with backoff when it fails or returns."""
    policy = backoff or Backoff(base=0.2, max_delay=10.0)
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        status.state[name] = "running"
        started = loop.time()
        try:
            await factory()
            log.warning("task %s returned; restarting", name)
        except asyncio.CancelledError:
            if owner_cancelled():
                status.state[name] = "stopped"
                raise
            log.warning("task %s: a library raised CancelledError; restarting it", name)
        except Exception:
            log.exception("task %s crashed; restarting", name)
        failures = 1 if loop.time() - started >= STABLE_AFTER else failures + 1
        status.restarts[name] = status.restarts.get(name, 0) + 1
        status.state[name] = "restarting"
        try:
            await asyncio.sleep(policy.delay(failures))
        except asyncio.CancelledError:
            status.state[name] = "stopped"
            raise

