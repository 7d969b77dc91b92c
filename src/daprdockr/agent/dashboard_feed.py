"""The ``dashboard`` task: the dashboard's model kept current from the etcd mirror, and its change
messages fanned out to every connected stream.

The feed subscribes to the change channel (``Topic.ETCD``), waits :attr:`DashboardFeed.coalesce`
after a wake so a burst of watch events is one message, and advances its
:class:`~daprdockr.core.dashboard.DashboardModel` to the mirror's state (:meth:`feed_once`).  Each
change message is serialised once, as the SSE bytes every client gets, kept in a ring buffer of
the last :data:`BUFFER` messages (for ``Last-Event-ID`` resume) and pushed to each connected
client's bounded queue.  A client whose queue overflows is dropped (its stream ends; the page
reconnects and resumes): a slow browser never blocks the agent.

Resume: a client that sends the id (revision) of a snapshot or message this process handed out
after its start, still covered by the buffer, gets the messages after it; any other id (none, too
old, another process's: the agent restarted, its start revision is at or past every id the one
before handed out) gets a snapshot.  Event numbers (``seq``) start at the start's
wall clock in milliseconds, so they keep increasing across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from daprdockr.agent.changes import Changes, Topic
from daprdockr.cancellation import within
from daprdockr.core.dashboard import DashboardModel
from daprdockr.core.state import ClusterState

log = logging.getLogger(__name__)
BUFFER = 1000  # change messages kept for resume
QUEUE_LIMIT = 256  # messages a client may have pending before it is dropped


def sse(kind: str, revision: int, data: Any) -> bytes:
    """One SSE event (compact JSON has no newline: one ``data`` line)."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"event: {kind}\nid: {revision}\ndata: {body}\n\n".encode()


class Subscriber:
    """One connected stream: a bounded queue of serialised messages."""

    def __init__(self, *, limit: int = QUEUE_LIMIT) -> None:
        self.limit = limit
        self.items: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.closed = False
        self.dropped = False

    def push(self, data: bytes) -> bool:
        """Queue ``data``; False (and the stream ends) when the client is closed or overflows."""
        if self.closed:
            return False
        if len(self.items) >= self.limit:
            self.dropped = True
            self.items.clear()
            self.close()
            return False
        self.items.append(data)
        self.wake.set()
        return True

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    async def next(self, *, idle: float) -> list[bytes] | None:
        """The messages queued ([] after ``idle`` seconds with none: time for a ping); None once closed."""
        if not self.items and not self.closed:
            with contextlib.suppress(TimeoutError):
                await within(self.wake.wait(), idle)
        self.wake.clear()
        if self.items:
            out = list(self.items)
            self.items.clear()
            return out
        return None if self.closed else []


class DashboardFeed:
    name = "dashboard"

    def __init__(
        self, *, state: Callable[[], ClusterState], changes: Changes, node_id: str, coalesce: float = 0.05,
        buffer: int = BUFFER, queue_limit: int = QUEUE_LIMIT, clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.node_id = node_id
        self.coalesce = coalesce
        self.queue_limit = queue_limit
        self.clock = clock
        self.wake = asyncio.Event()
        changes.subscribe(self.wake, Topic.ETCD)
        self.model: DashboardModel | None = None
        self.subscribers: set[Subscriber] = set()
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer)  # (revision, SSE bytes)
        self._floor = 0  # the oldest revision a client can be caught up from
        self._start = 0  # the revision the model started at
        # ids handed out (at or above the floor) besides those of the buffered messages: snapshots',
        # and the floor's when it is an evicted message's
        self._handed: set[int] = set()
        self._snapshot: tuple[int, bytes, bytes] | None = None  # (revision, model JSON, SSE event)
        self.messages = 0
        self.dropped = 0

    def _model(self) -> DashboardModel:
        if self.model is None:
            self.model = DashboardModel(self.state(), node_id=self.node_id)
            self.model.seq = int(self.clock() * 1000)
            self._floor = self._start = self.model.revision
        return self.model

    async def start(self) -> None:
        self._model()

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            await asyncio.sleep(self.coalesce)  # (the rest of a burst folds into this message)
            self.wake.clear()
            self.feed_once()

    async def stop(self) -> None:
        self.close_streams()

    def feed_once(self) -> bool:
        """Advance the model to the mirror's state; send the change, if any, to every client."""
        model = self._model()
        change = model.advance(self.state(), now=self.clock())
        if change is None:
            return False
        self._snapshot = None
        data = sse("change", model.revision, change)
        if len(self._buffer) == self._buffer.maxlen:
            self._floor = self._buffer[0][0]  # (a client at the evicted message's revision still resumes)
            self._handed = {r for r in self._handed if r >= self._floor} | {self._floor}
        self._buffer.append((model.revision, data))
        self.messages += 1
        for sub in list(self.subscribers):
            if not sub.push(data):
                self.subscribers.discard(sub)
                if sub.dropped:
                    self.dropped += 1
                    log.info("dashboard stream dropped: %d messages pending", self.queue_limit)
        return True

    def _snapshot_parts(self) -> tuple[int, bytes, bytes]:
        model = self._model()
        if self._snapshot is None or self._snapshot[0] != model.revision:
            snap = model.snapshot()
            body = json.dumps(snap, separators=(",", ":"), ensure_ascii=False).encode()
            self._snapshot = (model.revision, body, b"event: snapshot\nid: %d\ndata: %s\n\n" % (model.revision, body))
        return self._snapshot

    def snapshot(self) -> bytes:
        """The model as JSON (``GET /v1/dashboard``)."""
        revision, body, _ = self._snapshot_parts()
        self._handed.add(revision)
        return body

    def _replay(self, last_event_id: str) -> list[bytes] | None:
        """The messages after ``last_event_id``, or None when they cannot be told (a snapshot is due)."""
        try:
            since = int(last_event_id.strip())
        except ValueError:
            return None
        model = self._model()
        if since <= self._start or since < self._floor or since > model.revision:
            return None  # (at or before the start: another process may have handed out that id too)
        if since not in self._handed and all(revision != since for revision, _ in self._buffer):
            return None  # (not an id this process handed out: another process's, or made up)
        return [data for revision, data in self._buffer if revision > since]

    def subscribe(self, *, last_event_id: str = "") -> Subscriber:
        """A new client's queue, holding the snapshot or the replay it starts with."""
        sub = Subscriber(limit=self.queue_limit)
        replay = self._replay(last_event_id) if last_event_id else None
        if replay is None:
            revision, _, event = self._snapshot_parts()
            self._handed.add(revision)
            sub.items.append(event)
        else:
            sub.items.extend(replay)
        sub.wake.set()
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: object) -> None:
        if isinstance(sub, Subscriber):
            self.subscribers.discard(sub)

    def close_streams(self) -> None:
        """End every open stream (shutdown)."""
        for sub in self.subscribers:
            sub.close()
        self.subscribers.clear()
