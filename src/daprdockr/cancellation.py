"""Telling our own cancellation apart from a ``CancelledError`` a library raised.

grpc.aio ends the in-flight calls of a channel that is closed with :class:`asyncio.CancelledError`,
and other libraries do the same when a connection goes away.  Such an error says nothing about
whether *this task* was asked to stop.  ``Task.cancelling()`` does: it counts the ``cancel()``
requests made to the task that have not been uncancelled.  Code that catches ``CancelledError``
re-raises it only when :func:`owner_cancelled` is true and treats it as a transient failure
otherwise.

:func:`within` bounds an await without the 3.11 ``asyncio.wait_for`` that can drop a cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


def owner_cancelled() -> bool:
    """True when the running task itself was asked to stop (``task.cancel()``)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def within(aw: Awaitable[T], seconds: float | None) -> T:
    """``await aw``, raising :class:`TimeoutError` after ``seconds`` (``None``: no limit).

    Use this, never ``asyncio.wait_for``: on Python 3.11 ``wait_for`` drops the caller's own
    cancellation when the awaited call completes in the same loop iteration (CPython gh-86296,
    fixed in 3.12 by reimplementing it on ``asyncio.timeout``, as here).  A loop whose
    ``cancel()`` was dropped so runs on, and the agent's ordered shutdown waited for it forever.
    """
    async with asyncio.timeout(seconds):
        return await aw
