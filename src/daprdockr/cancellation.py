"""Telling our own cancellation apart from a ``CancelledError`` a library raised.

grpc.aio ends the in-flight calls of a channel that is closed with :class:`asyncio.CancelledError`,
and other libraries do the same when a connection goes away.  Such an error says nothing about
whether *this task* was asked to stop.  ``Task.cancelling()`` does: it counts the ``cancel()``
requests made to the task that have not been uncancelled.  Code that catches ``CancelledError``
re-raises it only when :func:`owner_cancelled` is true and treats it as a transient failure
otherwise.

:func:`honour_dropped_cancel` re-raises a cancel that a library swallowed.
:func:`within` bounds an await without the 3.11 ``asyncio.wait_for`` that can drop a cancellation.
:func:`stop_tasks` cancels tasks and waits for them, bounded, naming (with its stack) any that did
not end.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Iterable
from types import FrameType
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def owner_cancelled() -> bool:
    """True when the running task itself was asked to stop (``task.cancel()``)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def honour_dropped_cancel() -> None:
    """Raise :class:`asyncio.CancelledError` if the running task was asked to stop and runs on.

    For use right after awaiting a library that may have swallowed the cancel: aetcd starts a
    watch through 3.11's ``asyncio.wait_for`` (the same gh-86296), and a watch cancelled just as
    its stream came up went on waiting for events forever (an agent stopped as it came up never
    exited: tests/test_cancellation.py)."""
    if owner_cancelled():
        raise asyncio.CancelledError


async def within(aw: Awaitable[T], seconds: float | None) -> T:
    """``await aw``, raising :class:`TimeoutError` after ``seconds`` (``None``: no limit).

    Use this, never ``asyncio.wait_for``: on Python 3.11 ``wait_for`` drops the caller's own
    cancellation when the awaited call completes in the same loop iteration (CPython gh-86296,
    fixed in 3.12 by reimplementing it on ``asyncio.timeout``, as here).  A loop whose
    ``cancel()`` was dropped so runs on, and the agent's ordered shutdown waited for it forever.
    """
    async with asyncio.timeout(seconds):
        return await aw


async def stop_tasks(tasks: Iterable[asyncio.Task[object]], *, grace: float) -> list[str]:
    """Cancel ``tasks`` and wait at most ``grace`` seconds for them to end; the names of those
    that did not (each logged with where it is stuck: a task that swallows its cancel must not
    hold the process forever, and whoever reads the log must learn which one it was)."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return []
    _, stuck = await asyncio.wait(pending, timeout=grace)
    for task in sorted(stuck, key=lambda t: t.get_name()):
        log.error("task %s did not end %.1fs after it was cancelled; it waits in:\n%s", task.get_name(), grace,
                  "".join(traceback.format_list(awaiting(task.get_coro()))).rstrip())
    return sorted(t.get_name() for t in stuck)


def awaiting(coro: object) -> traceback.StackSummary:
    """Where a suspended coroutine waits: its frame, then the frames of what it awaits, down the
    chain (``Task.get_stack`` gives the outermost frame only)."""
    frames: list[tuple[FrameType, int]] = []
    node: object = coro
    while node is not None and len(frames) < 50:
        frame = getattr(node, "cr_frame", None) or getattr(node, "ag_frame", None) or getattr(node, "gi_frame", None)
        if isinstance(frame, FrameType):
            frames.append((frame, frame.f_lineno))
        node = getattr(node, "cr_await", None) or getattr(node, "ag_await", None) or getattr(node, "gi_yieldfrom", None)
    return traceback.StackSummary.extract(iter(frames))
