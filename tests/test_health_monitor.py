"""The agent's health monitor against real HTTP and TCP listeners on loopback: check results move
the state machine, a change (not every check) is reported, and a container still running an older
version is checked with its own version's check."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiohttp import web

from daprdockr.adapters.hollow_runtime import HollowRuntime
from daprdockr.adapters.procs import established_to
from daprdockr.core.containers import ContainerInfo
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.rollout import HistoryEntry
from daprdockr.health import HealthMonitor

WEB = ServiceName(group="hm", service="web")
IP = "127.0.0.5"


class NoExec:
    async def exec_ok(self, container_id: str, cmd: Sequence[str], *, within: float) -> bool:
        return False

    async def docker_health(self, container_id: str) -> str:
        return ""


def spec(health: object, env: str = "1") -> ServiceSpec:
    return ServiceSpec.from_dict({"image": "x", "http_port": 8080, "env": {"V": env}, "health": health}, name=WEB)


async def serve(status: list[int]) -> tuple[web.AppRunner, int]:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(status=status[0])

    app = web.Application()
    app.router.add_get("/healthz", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, IP, 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def test_http_check_flips_status_and_reports_only_changes() -> None:
    status = [200]
    runner, port = await serve(status)
    s = spec({"http": "/healthz", "port": 8080, "interval": "0.1s", "retries": 2})
    c = ContainerInfo(id="c1", service=WEB, number=1, node="n1", spec_hash=s.runtime_hash, running=True,
                      ports=(("8080/tcp", port),))
    changes: list[str] = []
    mon = HealthMonitor(runtime=NoExec(), address=IP, containers=lambda: [c], specs=lambda: {WEB: s},
                        on_change=lambda: changes.append(mon.health_of(c, s)), tick=0.02)
    task = asyncio.create_task(mon.run())
    try:
        assert mon.health_of(c, s) is None  # no verdict yet: the record keeps what it says
        await _until(lambda: mon.health_of(c, s) == "healthy")
        await asyncio.sleep(0.5)  # several more passing checks: no more reports
        status[0] = 500
        await _until(lambda: mon.health_of(c, s) == "unhealthy")
        status[0] = 200
        await _until(lambda: mon.health_of(c, s) == "healthy")
        assert changes == ["healthy", "unhealthy", "healthy"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()


async def test_an_older_version_keeps_its_own_check() -> None:
    """v1 had no check; v2 adds one on a path v1 containers do not serve.  A v1 container must not
    turn unhealthy (and leave DNS and nginx) just because v2 is desired."""
    status = [404]
    runner, port = await serve(status)
    v1, v2 = spec(None), spec({"http": "/healthz", "port": 8080, "interval": "0.1s", "retries": 1}, env="2")
    old = ContainerInfo(id="old", service=WEB, number=1, node="n1", spec_hash=v1.runtime_hash, running=True,
                        ports=(("8080/tcp", port),))
    desired = {WEB: v1}
    mon = HealthMonitor(runtime=NoExec(), address=IP, containers=lambda: [old], specs=lambda: desired, tick=0.02)
    task = asyncio.create_task(mon.run())
    try:
        await asyncio.sleep(0.1)
        desired = {WEB: v2}  # the rollout starts
        await asyncio.sleep(0.5)
        assert mon.check_for(old, v2) is None and mon.health_of(old, v2) == ""
        new = ContainerInfo(id="new", service=WEB, number=1, node="n1", spec_hash=v2.runtime_hash, running=True,
                            ports=(("8080/tcp", port),))
        assert not await mon.probe(new, v2)  # the new version is held to the new check
        status[0] = 200
        assert await mon.probe(new, v2) and mon.health_of(new, v2) == "healthy"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()


async def test_after_an_agent_restart_an_older_version_is_checked_with_its_check_from_the_history() -> None:
    """The monitor never saw v1 (the agent restarted mid-rollout): v1's check comes from the
    history, so a v1 container that fails it turns unhealthy instead of passing as check-less."""
    status = [500]
    runner, port = await serve(status)
    v1 = spec({"http": "/healthz", "port": 8080, "interval": "0.1s", "retries": 1})
    v2 = spec({"http": "/healthz", "port": 8080, "interval": "0.1s", "retries": 1}, env="2")
    old = ContainerInfo(id="old", service=WEB, number=1, node="n1", spec_hash=v1.runtime_hash, running=True,
                        ports=(("8080/tcp", port),))
    history = {WEB: {1: HistoryEntry(version=1, spec=v1.to_dict()), 2: HistoryEntry(version=2, spec=v2.to_dict())}}
    mon = HealthMonitor(runtime=NoExec(), address=IP, containers=lambda: [old], specs=lambda: {WEB: v2},
                        history=lambda: history, tick=0.02)
    assert mon.check_for(old, v2) == v1.health
    task = asyncio.create_task(mon.run())
    try:
        await _until(lambda: mon.health_of(old, v2) == "unhealthy")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()
    gone = ContainerInfo(id="older", service=WEB, number=2, node="n1", spec_hash="not-kept", running=True)
    assert mon.health_of(gone, v2) is None  # older than the history: unknown, the record keeps its word


async def test_the_start_period_counts_from_the_container_creation_not_from_the_first_check() -> None:
    status = [500]
    runner, port = await serve(status)
    s = spec({"http": "/healthz", "port": 8080, "interval": "0.1s", "retries": 1, "start_period": "60s"})
    now = 1_000_000.0
    fresh = ContainerInfo(id="fresh", service=WEB, number=1, node="n1", spec_hash=s.runtime_hash, running=True,
                          ports=(("8080/tcp", port),), created=now - 5)
    aged = ContainerInfo(id="aged", service=WEB, number=2, node="n1", spec_hash=s.runtime_hash, running=True,
                         ports=(("8080/tcp", port),), created=now - 3600)
    mon = HealthMonitor(runtime=NoExec(), address=IP, containers=lambda: [fresh, aged], specs=lambda: {WEB: s},
                        wall=lambda: now, tick=0.02)
    task = asyncio.create_task(mon.run())
    try:
        await _until(lambda: mon.health_of(aged, s) == "unhealthy")  # an agent restart gives it no new grace
        assert mon.states["fresh"].checked_at > float("-inf") and mon.health_of(fresh, s) is None  # still in it
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()


async def test_an_http_check_leaves_no_connection_open_to_a_keep_alive_server() -> None:
    """The container's drain waits for established connections to its published port to close: a
    kept-alive checker connection would make every removal wait the full drain timeout."""
    runner, port = await serve([200])  # aiohttp's server keeps connections alive
    s = spec({"http": "/healthz", "port": 8080})
    c = ContainerInfo(id="c1", service=WEB, number=1, node="n1", spec_hash=s.runtime_hash, running=True,
                      ports=(("8080/tcp", port),))
    mon = HealthMonitor(runtime=NoExec(), address=IP, containers=lambda: [c], specs=lambda: {WEB: s})
    try:
        assert await mon.check_once(c, s.health)  # type: ignore[arg-type]
        assert await mon.check_once(c, s.health)  # type: ignore[arg-type]
        await _until(lambda: established_to(IP, [port]) == 0, timeout=2.0)
    finally:
        if mon._session is not None:
            await mon._session.close()
        await runner.cleanup()


async def test_a_tcp_check_fails_when_the_connection_is_closed_at_once_as_behind_dockers_proxy() -> None:
    """Docker's userland proxy accepts a connect on the published port even when nothing listens in
    the container, then closes it at once: that is no healthy listener."""
    async def proxy_without_backend(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def quiet_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # waits for the client to speak or leave, like most servers
        writer.close()

    s = spec({"tcp": 8080})
    assert s.health is not None
    mon = HealthMonitor(runtime=NoExec(), address=IP, containers=lambda: [], specs=lambda: {WEB: s})
    for handler, healthy in ((proxy_without_backend, False), (quiet_server, True)):
        server = await asyncio.start_server(handler, IP, 0)
        port = server.sockets[0].getsockname()[1]
        c = ContainerInfo(id="c1", service=WEB, number=1, node="n1", spec_hash=s.runtime_hash, running=True,
                          ports=(("8080/tcp", port),))
        try:
            assert await mon.check_once(c, s.health) is healthy, handler.__name__
        finally:
            server.close()
            await server.wait_closed()


async def _until(ok: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not ok():  # type: ignore[operator]
        assert loop.time() < end, "not reached"
        await asyncio.sleep(0.02)


async def test_a_network_check_hook_answers_http_and_tcp_checks_without_a_connection() -> None:
    """A hollow node's runtime answers http and tcp checks itself: nothing listens on its ports."""
    rt = HollowRuntime(node_id="h1", advertise_ip=IP)
    s = spec({"http": "/healthz", "port": 8080, "interval": "0.1s", "retries": 1})
    c = await rt.start_instance(spec=s, number=1)
    mon = HealthMonitor(runtime=rt, address=IP, containers=lambda: [c], specs=lambda: {WEB: s}, tick=0.02,
                        network=rt.network_check)
    task = asyncio.create_task(mon.run())
    try:
        await _until(lambda: mon.health_of(c, s) == "healthy")
        rt.set_healthy(c.id, False)
        await _until(lambda: mon.health_of(c, s) == "unhealthy")
        tcp = spec({"tcp": 8080})
        assert await mon.check_once(c, tcp.health) is False  # type: ignore[arg-type]
        rt.set_healthy(c.id, True)
        assert await mon.check_once(c, tcp.health) is True  # type: ignore[arg-type]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
