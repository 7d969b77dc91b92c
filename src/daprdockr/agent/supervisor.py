"""Task supervision: named, guarded root tasks.

:func:`guarded` wraps a long-running coroutine factory so that an unexpected exception is
logged and the task restarted with backoff instead of tearing down the whole TaskGroup.
Cancellation (shutdown) passes through.  ``status`` records the state of each task for
``/healthz``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from daprdockr.core.backoff import Backoff

log = logging.getLogger(__name__)


class TaskStatus:
    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self.restarts: dict[str, int] = {}


async def guarded(
    name: str,
    factory: Callable[[], Awaitable[None]],
    *,
    status: TaskStatus,
    backoff: Backoff | None = None,
) -> None:
    """Run ``factory()`` forever; restart it with backoff when it fails or returns."""
    policy = backoff or Backoff(base=0.2, max_delay=10.0)
    failures = 0
    while True:
        status.state[name] = "running"
        try:
            await factory()
            log.warning("task %s returned; restarting", name)
        except asyncio.CancelledError:
            status.state[name] = "stopped"
            raise
        except Exception:
            log.exception("task %s crashed; restarting", name)
        failures += 1
        status.restarts[name] = status.restarts.get(name, 0) + 1
        status.state[name] = "restarting"
        await asyncio.sleep(policy.delay(failures))
