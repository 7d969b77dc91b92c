"""Telling our own cancellation apart from a ``CancelledError`` a library raised.

grpc.aio ends the in-flight calls of a channel that is closed with :class:`asyncio.CancelledError`,
and other libraries do the same when a connection goes away.  Such an error says nothing about
whether *this task* was asked to stop.  ``Task.cancelling()`` does: it counts the ``cancel()``
requests made to the task that have not been uncancelled.  Code that catches ``CancelledError``
re-raises it only when :func:`owner_cancelled` is true and treats it as a transient failure
otherwise.
"""

from __future__ import annotations

import asyncio


def owner_cancelled() -> bool:
    """True when the running task itself was asked to stop (``task.cancel()``)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
