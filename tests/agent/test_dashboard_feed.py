"""The dashboard feed (one message per burst, the resume buffer, slow clients dropped) and its
endpoints on a real AgentApi (aiohttp on loopback): the SSE format, the access rule, the security
headers, pings, and streams ended at shutdown.  The state comes from a real StateMirror fed watch
events; the real etcd and agent process are in tests/e2e/test_dashboard.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest

from daprdockr.agent.api import AgentApi
from daprdockr.agent.changes import Changes
from daprdockr.agent.dashboard_api import SECURITY_HEADERS
from daprdockr.agent.dashboard_feed import DashboardFeed, Subscriber
from daprdockr.agent.view import AgentView, LogSource
from daprdockr.core.keys import KeySchema
from daprdockr.core.mirror import StateMirror, WatchEvent
from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState
from tests.support.sse import Sse, parse_block, read_events

SCHEMA = KeySchema("/dd")
WEB = ServiceName(group="app", service="web")


class Cluster:
    """A mirror fed watch events, and the change channel the informer would publish to."""

    def __init__(self) -> None:
        self.mirror = StateMirror(schema=SCHEMA)
        self.mirror.reset([], revision=1)
        self.changes = Changes()
        self.revision = 1

    def put(self, key: str, value: dict[str, Any], lease: int = 7) -> None:
        self.revision += 1
        self.mirror.apply(WatchEvent(kind="put", key=key, value=json.dumps(value).encode(), revision=self.revision,
                                     lease=lease))
        self.changes.etcd_changed()

    def scale(self, n: int, env: dict[str, str] | None = None) -> None:
        self.put(SCHEMA.service(WEB), {"image": "busybox", "instances": n, **({"env": env} if env else {})})

    def feed(self, **kw: Any) -> DashboardFeed:
        return DashboardFeed(state=self.mirror.state, changes=self.changes, node_id="n1", coalesce=0, **kw)


def drained(sub: Subscriber) -> list[Sse]:
    out = [parse_block(block.decode().rstrip("\n")) for block in sub.items]
    sub.items.clear()
    return out


async def test_each_burst_is_one_message_and_a_resume_replays_only_later_ones() -> None:
    c = Cluster()
    feed = c.feed(buffer=3)
    await feed.start()
    first = feed.subscribe()
    (snap,) = drained(first)
    assert snap.event == "snapshot" and snap.id == "1" and snap.json()["services"] == []
    assert snap.json()["events"] == []
    ids = []
    for n in (1, 2, 3):
        c.scale(n)
        assert feed.feed_once()
        ids.append(str(c.revision))
    assert not feed.feed_once()  # (nothing new)
    got = drained(first)
    assert [(e.event, e.id) for e in got] == [("change", i) for i in ids]
    assert [s["desired"] for e in got for s in e.json()["services"]] == [1, 2, 3]
    assert [e.json()["events"][-1]["kind"] for e in got] == ["created", "scaled", "scaled"]

    # resume: the messages after the id, from the buffer; the snapshot's id too
    assert [e.id for e in drained(feed.subscribe(last_event_id=ids[0]))] == ids[1:]
    # (the start's revision: a process before a restart may have handed out the same id)
    assert [e.event for e in drained(feed.subscribe(last_event_id="1"))] == ["snapshot"]
    assert drained(feed.subscribe(last_event_id=ids[-1])) == []
    for unknown in ("", "garbage", str(c.revision + 5), "0"):  # (none, junk, the future, not handed out)
        assert [e.event for e in drained(feed.subscribe(last_event_id=unknown))] == ["snapshot"]
    c.scale(4)
    feed.feed_once()  # (the buffer of 3 lets the oldest message go: a client at "1" needs a snapshot now)
    assert [e.event for e in drained(feed.subscribe(last_event_id="1"))] == ["snapshot"]
    assert [e.id for e in drained(feed.subscribe(last_event_id=ids[0]))] == [*ids[1:], str(c.revision)]


async def test_bursts_coalesce_in_run_and_a_slow_client_is_dropped_without_blocking() -> None:
    c = Cluster()
    feed = c.feed(queue_limit=2)
    feed.coalesce = 0.05
    await feed.start()
    slow, fast = feed.subscribe(), feed.subscribe()
    task = asyncio.create_task(feed.run())
    try:
        for n in range(1, 11):  # one burst: one message
            c.scale(n)
        await asyncio.sleep(0.3)
        assert feed.messages == 1
        drained(fast)
        for n in (20, 30):
            c.scale(n)
            await asyncio.sleep(0.15)
            drained(fast)
        assert slow.closed and slow.dropped and slow not in feed.subscribers and feed.dropped == 1
        assert await slow.next(idle=5) is None  # (its stream ends at once)
        assert fast in feed.subscribers and not fast.closed
    finally:
        task.cancel()


class View:
    """What the dashboard routes read of the agent: its state."""

    def __init__(self, state: Any) -> None:
        self.state = state


@pytest.fixture
async def api() -> AsyncIterator[tuple[AgentApi, Cluster, str]]:
    c = Cluster()
    feed = c.feed()
    await feed.start()
    api = AgentApi(view=cast(AgentView, View(c.mirror.state)), logs=cast(LogSource, None), listen=("127.0.0.1", 0),
                   dashboard=feed)
    await api.start()
    task = asyncio.create_task(feed.run())
    try:
        yield api, c, f"http://127.0.0.1:{api.port}"
    finally:
        task.cancel()
        await api.stop()


async def test_the_stream_sends_retry_snapshot_changes_and_pings_with_the_security_headers(
    api: tuple[AgentApi, Cluster, str],
) -> None:
    agent_api, c, url = api
    assert agent_api.dashboard_routes is not None
    agent_api.dashboard_routes.ping_interval = 0.2
    async with aiohttp.ClientSession() as http, http.get(f"{url}/v1/dashboard/stream") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
        assert all(resp.headers[k] == v for k, v in SECURITY_HEADERS.items())
        assert "Access-Control-Allow-Origin" not in resp.headers
        events = read_events(resp)
        assert (await anext(events)).retry == "1000"
        assert (await anext(events)).event == "snapshot"
        assert (await anext(events)).comment == "ping"
        c.scale(2, env={"X": "<img src=x onerror=alert(1)>"})
        change = await anext(events)
        assert change.event == "change" and change.id == str(c.revision)
        assert change.json()["services"][0]["desired"] == 2
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/v1/services/app/web") as resp:
            assert resp.status == 200 and resp.headers["Content-Security-Policy"].startswith("default-src 'self'")
            assert (await resp.json())["spec"]["env"] == {"X": "<img src=x onerror=alert(1)>"}
        async with http.get(f"{url}/v1/services/app/nope") as resp:
            assert resp.status == 404
        async with http.get(f"{url}/v1/dashboard") as resp:
            assert (await resp.json())["revision"] == c.revision


async def test_beyond_loopback_the_data_needs_the_token_and_the_page_does_not(
    api: tuple[AgentApi, Cluster, str],
) -> None:
    agent_api, _, url = api
    agent_api.token = "s3cret"  # (what an API listening beyond loopback has)
    async with aiohttp.ClientSession() as http:
        for path in ("/v1/dashboard", "/v1/dashboard/stream", "/v1/services/app/web"):
            async with http.get(url + path) as resp:
                assert resp.status == 401, path
                assert resp.headers["X-Frame-Options"] == "DENY"
            async with http.get(url + path, headers={"Authorization": "Bearer wrong"}) as resp:
                assert resp.status == 401, path
        async with http.get(f"{url}/v1/dashboard", headers={"Authorization": "Bearer s3cret"}) as resp:
            assert resp.status == 200
        for path in ("/", "/static/index.html"):
            async with http.get(url + path) as resp:
                assert resp.status == 200 and resp.content_type == "text/html", path
                assert all(resp.headers[k] == v for k, v in SECURITY_HEADERS.items())
        async with http.get(f"{url}/static/app.js") as resp:  # (a module refused under nosniff otherwise)
            assert resp.status == 200 and resp.content_type in ("text/javascript", "application/javascript")
            assert resp.headers["Cache-Control"] == "no-cache"


async def test_shutdown_ends_open_streams_quickly(api: tuple[AgentApi, Cluster, str]) -> None:
    agent_api, _, url = api
    async with aiohttp.ClientSession() as http, http.get(f"{url}/v1/dashboard/stream") as resp:
        events = read_events(resp)
        await anext(events)
        await anext(events)
        started = time.monotonic()
        await agent_api.stop()
        rest = [e async for e in events]
        assert time.monotonic() - started < 1.0 and rest == []


async def test_a_client_that_goes_away_is_unsubscribed(api: tuple[AgentApi, Cluster, str]) -> None:
    agent_api, c, url = api
    assert agent_api.dashboard_routes is not None
    agent_api.dashboard_routes.ping_interval = 0.1
    feed = cast(DashboardFeed, agent_api.dashboard)
    async with aiohttp.ClientSession() as http, http.get(f"{url}/v1/dashboard/stream") as resp:
        await anext(read_events(resp))
        assert len(feed.subscribers) == 1
    deadline = time.monotonic() + 5
    while feed.subscribers and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not feed.subscribers
    assert isinstance(c.mirror.state(), ClusterState)
