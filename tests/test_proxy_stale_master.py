"""An agent that was SIGKILLed leaves its nginx running (own session, still bound to the port),
and if that master is then killed too, its workers stay behind holding the socket.  The next
agent with the same state dir adopts a master that runs its own configuration
(tests/test_proxy_adoption.py); what it cannot adopt (another configuration, or workers without
their master) it must kill, or its own nginx never binds and the node keeps routing with the dead
agent's frozen configuration."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

import aiohttp
import pytest

from daprdockr.adapters.procs import nginx_group_members, stale_nginx_group
from daprdockr.proxy import NginxManager
from tests.conftest import missing
from tests.support.procs import free_port

EDGE = "127.0.0.22"


@pytest.mark.parametrize(
    ("content", "expect_pid"),
    [
        (None, False),  # no pid file
        ("garbage", False),
        ("999999999", False),  # no such process
        ("SELF", False),  # a live process that is not nginx running our config
        ("1", False),  # init, never
    ],
)
def test_stale_group_only_names_our_nginx(tmp_path: Path, content: str | None, expect_pid: bool) -> None:
    pid_file = tmp_path / "nginx.pid"
    if content is not None:
        pid_file.write_text(str(os.getpid()) if content == "SELF" else content)
    assert (stale_nginx_group(pid_file, tmp_path / "nginx.conf") is not None) is expect_pid


def nginx_binary() -> str:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        missing("nginx")
    return binary


@pytest.mark.nginx
@pytest.mark.parametrize("master_killed_too", [False, True], ids=["master-left", "only-workers-left"])
async def test_new_manager_kills_what_a_dead_agent_left_behind(tmp_path: Path, master_killed_too: bool) -> None:
    binary = nginx_binary()
    listen = (EDGE, free_port(EDGE))
    # (with its master alive, the dead agent's nginx is not adoptable only when it runs another
    # configuration: an upgrade changed it)
    orphaned = NginxManager(state_dir=tmp_path / "nginx", listen=listen, binary=binary,
                            workers=2 if master_killed_too else 1)
    await orphaned.start()
    old = orphaned.master.proc
    assert old is not None
    assert stale_nginx_group(Path(orphaned.paths.pid), orphaned.conf) == old.pid
    # the agent "dies": nothing stops `orphaned`; maybe its master is SIGKILLed as well
    if master_killed_too:
        old.send_signal(signal.SIGKILL)
        await old.wait()
        await asyncio.sleep(0.2)
        assert stale_nginx_group(Path(orphaned.paths.pid), orphaned.conf) == old.pid, "workers remain"
    fresh = NginxManager(state_dir=tmp_path / "nginx", listen=listen, binary=binary)
    try:
        await fresh.start()
        assert await asyncio.wait_for(old.wait(), 5) != 0, "the stale master must be killed"
        assert nginx_group_members(old.pid) == [], "no worker of the old group is left either"
        await asyncio.sleep(3.0)  # longer than nginx's bind retries (5 x 0.5 s) on a taken port
        assert fresh.healthy and fresh.pid != old.pid
        async with aiohttp.ClientSession() as session, session.get(
            f"http://{EDGE}:{listen[1]}/", headers={"Host": "nothing.example"}
        ) as resp:
            assert resp.status == 404
    finally:
        await fresh.stop()
        await orphaned.stop()
