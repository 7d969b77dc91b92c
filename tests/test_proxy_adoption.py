"""An agent that dies leaves its nginx serving; the next one adopts it (real nginx, real load).

* a manager that goes away without stopping nginx (its agent was SIGKILLed): nginx keeps serving
  its last table; a new manager on the same state dir adopts the same master (pid unchanged, no
  request fails under wrk keep-alive) and its table replaces the old one;
* a master running another configuration (an upgrade) is replaced, not adopted;
* nobody adopting it, the master quits by itself after the orphan timeout.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from daprdockr.core.backoff import Backoff
from daprdockr.core.restart_policy import RestartPolicy
from daprdockr.proxy import NginxManager
from tests.conftest import missing
from tests.support.loadrun import wrk
from tests.support.procs import free_port
from tests.test_proxy import EDGE, WEB, Backend, get, settle, started_backends, state_for

pytestmark = [pytest.mark.nginx, pytest.mark.timeout(120)]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


async def abandon(m: NginxManager, task: asyncio.Task[None]) -> None:
    """The agent dies (SIGKILL): its loop ends, nothing stops nginx."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if m._session is not None:
        await m._session.close()


@pytest.fixture
async def backends() -> AsyncIterator[list[Backend]]:
    if not shutil.which("wrk"):
        missing("wrk")
    async with started_backends(3) as items:
        yield items


async def test_a_new_manager_adopts_the_running_nginx_and_no_request_fails(
    tmp_path: Path, backends: list[Backend]
) -> None:
    listen = (EDGE, free_port(EDGE))
    first = NginxManager(state_dir=tmp_path / "nginx", listen=listen, binary=NGINX)
    await first.start()
    task = asyncio.create_task(first.run())
    await settle(first, state_for({WEB: backends[:2]}))
    master = first.pid
    assert master is not None and not first.adopted
    load = asyncio.create_task(wrk(f"http://{listen[0]}:{listen[1]}/", host="web.example.com", seconds=4,
                                   connections=8))
    await asyncio.sleep(0.5)
    await abandon(first, task)
    await asyncio.sleep(1.0)  # no agent: nginx serves its last table
    second = NginxManager(state_dir=tmp_path / "nginx", listen=listen, binary=NGINX)
    await second.start()
    task = asyncio.create_task(second.run())
    try:
        assert second.adopted and second.pid == master
        await settle(second, state_for({WEB: backends[2:]}))
        run = await load
        assert run.failed == 0 and run.requests > 0, run.detail
        async with aiohttp.ClientSession() as s:
            assert {(await get(second, "web.example.com", s))[1].split()[0] for _ in range(6)} == {"b2"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await second.stop()
    for _ in range(100):
        if not alive(master):
            break
        await asyncio.sleep(0.05)
    assert not alive(master)  # an adopted master is stopped like our own


async def test_a_master_running_another_configuration_is_replaced(tmp_path: Path) -> None:
    listen = (EDGE, free_port(EDGE))
    first = NginxManager(state_dir=tmp_path / "nginx", listen=listen, binary=NGINX, workers=1)
    await first.start()
    task = asyncio.create_task(first.run())
    old = first.pid
    await abandon(first, task)
    second = NginxManager(state_dir=tmp_path / "nginx", listen=listen, binary=NGINX, workers=2)
    await second.start()
    try:
        assert not second.adopted and second.pid != old
        assert old is not None and not alive(old)
    finally:
        await second.stop()


async def test_an_nginx_nobody_adopts_quits_after_the_orphan_timeout(tmp_path: Path) -> None:
    m = NginxManager(state_dir=tmp_path / "nginx", listen=(EDGE, free_port(EDGE)), binary=NGINX, orphan_timeout=4)
    await m.start()
    task = asyncio.create_task(m.run())
    pid = m.pid
    assert pid is not None
    await asyncio.sleep(6)  # (past the orphan timeout)
    assert alive(pid)  # the heartbeat keeps it
    await abandon(m, task)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while alive(pid) and loop.time() - t0 < 15:
        await asyncio.sleep(0.1)
    assert not alive(pid), "the orphaned nginx never quit"
    assert loop.time() - t0 >= 1.0  # not at once: the bound counts from the last heartbeat


async def test_a_restarted_nginx_is_guarded_too(tmp_path: Path) -> None:
    """nginx crashed and the manager started it again (2.5 s later: its restart backoff): the guard
    of the dead master ended with it, and the new master has one (it still quits when nobody
    adopts it)."""
    slow = RestartPolicy(backoff=Backoff(base=2.5, max_delay=2.5), jitter=0.0)
    m = NginxManager(state_dir=tmp_path / "nginx", listen=(EDGE, free_port(EDGE)), binary=NGINX, orphan_timeout=4,
                     restart_policy=slow)
    await m.start()
    task = asyncio.create_task(m.run())
    first = m.pid
    assert first is not None
    os.kill(first, 9)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while (m.pid == first or not m.healthy) and loop.time() - t0 < 10:
        await asyncio.sleep(0.05)
    second = m.pid
    assert second is not None and second != first and m.healthy
    await asyncio.sleep(1.5)  # the old guard noticed its master is gone
    await abandon(m, task)
    t0 = loop.time()
    while alive(second) and loop.time() - t0 < 15:
        await asyncio.sleep(0.1)
    assert not alive(second), "the restarted nginx had no guard"
