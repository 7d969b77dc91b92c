"""The dashboard's data side against a real etcd and a real (hollow) agent process on 127.0.0.11:
the snapshot equals the state read from etcd, a ``svc set`` shows on the stream as a change event
in well under a second (measured; a generous bound asserted), a resume with ``Last-Event-ID``
replays only later changes, stopping the agent ends an open stream quickly, a restarted agent
answers the old id with a snapshot, every response carries the CSP, and a spec's hostile env
value comes back in JSON unchanged (escaping it is the page's job)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from typer.testing import CliRunner

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.agent.dashboard_api import SECURITY_HEADERS
from daprdockr.cli.main import app
from daprdockr.core.dashboard import DashboardModel
from tests.e2e.test_hollow_cluster import hollow_agents
from tests.support.sse import Sse, read_events

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

HOSTILE = "<img src=x onerror=alert(1)>"
UPDATE_BOUND = 5.0  # seconds; the benchmark's target is 1 s (the measured delay is printed)


def cli(etcd: str, prefix: str, *args: str) -> None:
    got = CliRunner().invoke(app, ["--etcd", etcd, "--prefix", prefix, *args])
    assert got.exit_code == 0, got.output


async def dashboard(http: aiohttp.ClientSession, url: str, check: Callable[[dict[str, Any]], bool], *,
                    within: float, what: str) -> dict[str, Any]:
    """``GET /v1/dashboard`` until ``check`` holds (the agent may still be starting)."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{url}/v1/dashboard") as resp:
                if resp.status == 200:
                    last = await resp.json()
                    if check(last):
                        return last  # type: ignore[no-any-return]
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} not within {within}s; last: {last}")


@contextlib.asynccontextmanager
async def stream(http: aiohttp.ClientSession, url: str, last_id: str = "") -> AsyncIterator[AsyncIterator[Sse]]:
    headers = {"Last-Event-ID": last_id} if last_id else {}
    async with http.get(f"{url}/v1/dashboard/stream", headers=headers) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
        assert all(resp.headers[k] == v for k, v in SECURITY_HEADERS.items())
        events = read_events(resp)
        assert (await anext(events)).retry == "1000"
        yield events


def desired(ev: Sse) -> int | None:
    rows = [s for s in ev.json()["services"] if s["service"] == "web.shop"] if ev.event == "change" else []
    return rows[0]["desired"] if rows else None


async def test_the_dashboard_follows_etcd_resumes_and_survives_a_restart(
    etcd_endpoints: str, prefix: str, tmp_path: Path, store: EtcdStore,
) -> None:
    procs: list[subprocess.Popen[bytes]] = []
    timeout = aiohttp.ClientTimeout(total=120, sock_read=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        with hollow_agents(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=1, procs=procs) as apis:
            url = apis["h1"]
            await dashboard(http, url, lambda d: True, within=60, what="the agent's API")
            await asyncio.to_thread(cli, etcd_endpoints, prefix, "svc", "set", "web.shop", "--image", "hollow",
                                    "--instances", "3", "--env", f"X={HOSTILE}")
            await dashboard(http, url, lambda d: any(s["running"] == 3 for s in d["services"]), within=60,
                            what="3 instances running")

            # the snapshot is the state in etcd
            state = await store.snapshot()
            snap = await dashboard(http, url, lambda d: d["revision"] >= state.revision, within=10,
                                   what=f"revision {state.revision}")
            fresh = DashboardModel(state, node_id="h1").snapshot()
            for table in ("services", "nodes", "instances"):
                assert snap[table] == fresh[table], table
            assert snap["node"] == "h1" and len(snap["instances"]) == 3
            assert {"created", "claimed", "started", "node-joined"} <= {e["kind"] for e in snap["events"]}
            seqs = [e["seq"] for e in snap["events"]]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

            # the page and its files, with the CSP; the hostile env value as it is, in JSON
            for path in ("/", "/static/index.html"):
                async with http.get(url + path) as resp:
                    assert resp.status == 200
                    assert all(resp.headers[k] == v for k, v in SECURITY_HEADERS.items())
            async with http.get(f"{url}/v1/services/shop/web") as resp:
                detail = await resp.json()
            assert detail["spec"]["env"] == {"X": HOSTILE} and detail["history"][-1]["spec"]["env"] == {"X": HOSTILE}

            # a write in etcd is a change event on the stream
            async with stream(http, url) as events:
                first = await anext(events)
                assert first.event == "snapshot" and int(first.id) >= state.revision
                ids = []
                for n in (5, 6):
                    started = time.monotonic()
                    await asyncio.to_thread(cli, etcd_endpoints, prefix, "svc", "set", "web.shop", "--image",
                                            "hollow", "--instances", str(n), "--env", f"X={HOSTILE}")
                    async for ev in events:
                        if desired(ev) == n:
                            break
                    delay = time.monotonic() - started
                    print(f"svc set to {n} instances on the stream after {delay:.3f}s (CLI start included)")
                    assert delay < UPDATE_BOUND
                    ids.append(ev.id)
                    assert int(ev.id) > int(first.id)
            await asyncio.to_thread(cli, etcd_endpoints, prefix, "svc", "set", "web.shop", "--image", "hollow",
                                    "--instances", "7", "--env", f"X={HOSTILE}")
            await dashboard(http, url, lambda d: d["services"][0]["desired"] == 7, within=10, what="desired 7")

            # resume after the first change: only the later ones, no snapshot
            async with stream(http, url, last_id=ids[0]) as events:
                replayed = []
                async for ev in events:
                    assert ev.event == "change" and int(ev.id) > int(ids[0])
                    replayed.append(ev)
                    if desired(ev) == 7:
                        break
            assert ids[1] in [e.id for e in replayed] and 6 in [desired(e) for e in replayed]

            # stopping the agent ends an open stream quickly
            async with stream(http, url) as events:
                assert (await anext(events)).event == "snapshot"
                started = time.monotonic()
                procs[0].terminate()
                rest = [ev async for ev in events]
                ended = time.monotonic() - started
            print(f"the stream ended {ended:.3f}s after SIGTERM")
            assert ended < 5.0 and all(ev.comment == "ping" for ev in rest)
            last_id = replayed[-1].id

        # a restarted agent answers the old id with a snapshot
        with hollow_agents(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=1) as apis:
            url = apis["h1"]
            await dashboard(http, url, lambda d: True, within=60, what="the restarted agent's API")
            async with stream(http, url, last_id=last_id) as events:
                first = await anext(events)
                assert first.event == "snapshot" and int(first.id) >= int(last_id), first
                assert first.json()["services"][0]["desired"] == 7
