"""The hollow runtime: containers in memory behind the agent's runtime Protocol (no Docker, no sockets)."""

from __future__ import annotations

import asyncio
import time

import pytest

from daprdockr.adapters.hollow_runtime import HollowOptions, HollowRuntime
from daprdockr.agent.runtime import AgentRuntime
from daprdockr.core.lifecycle import HealthCheck
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.errors import ContainerError

WEB = ServiceName(group="app", service="web")


def spec(**extra: object) -> ServiceSpec:
    return ServiceSpec.from_dict({"image": "busybox", "instances": 3, "http_port": 8080, "ports": [9000], **extra},
                                 name=WEB)


def runtime(**options: object) -> HollowRuntime:
    return HollowRuntime(node_id="h1", advertise_ip="127.0.0.11", options=HollowOptions(**options))  # type: ignore[arg-type]


async def events_of(rt: HollowRuntime) -> tuple[asyncio.Task[None], list[tuple[str, str]]]:
    """Collect (action, id) of the runtime's events in a task (subscribed once this returns)."""
    seen: list[tuple[str, str]] = []

    async def collect() -> None:
        async for ev in rt.events():
            seen.append((str(ev["Action"]), str(ev["id"])))

    task = asyncio.create_task(collect())
    await asyncio.sleep(0)
    return task, seen


def test_it_is_what_the_agent_needs() -> None:
    rt: AgentRuntime = runtime()  # mypy checks the Protocol; this checks nothing is missing at run time
    for name in ("ping", "close", "container_networks", "events", "list_managed", "start_instance", "inspect",
                 "restart_instance", "restart_container", "remove", "drain", "exec_ok", "docker_health",
                 "find_instance", "logs"):
        assert callable(getattr(rt, name)), name


async def test_a_start_runs_a_labelled_container_with_ports_from_a_counter() -> None:
    rt = runtime(first_port=30000)
    s = spec()
    one = await rt.start_instance(spec=s, number=1)
    two = await rt.start_instance(spec=s, number=2)
    assert one.running and one.serving and one.node == "h1" and one.service == WEB and one.number == 1
    assert one.spec_hash == s.runtime_hash and one.created <= time.time()
    assert dict(one.ports) == {"8080/tcp": 30000, "9000/tcp": 30001}
    assert dict(two.ports) == {"8080/tcp": 30002, "9000/tcp": 30003}
    assert len(one.id) == 64 and one.id != two.id
    assert sorted(c.number for c in await rt.list_managed()) == [1, 2]
    assert await rt.inspect(one.id) == one
    assert await rt.find_instance(service=WEB, number=2) == two
    assert await rt.find_instance(service=WEB, number=3) is None


async def test_ports_wrap_below_65536() -> None:
    rt = runtime(first_port=65534)
    first = await rt.start_instance(spec=spec(), number=1)
    second = await rt.start_instance(spec=spec(), number=2)
    assert [p for _, p in first.ports] == [65534, 65535] and [p for _, p in second.ports] == [65534, 65535]


async def test_a_start_takes_the_start_delay() -> None:
    rt = runtime(start_delay=0.2)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    started = await asyncio.gather(*(rt.start_instance(spec=spec(), number=n) for n in (1, 2, 3)))
    assert 0.19 <= loop.time() - t0 < 1.0  # in parallel, as Docker starts them
    assert len({c.id for c in started}) == 3


async def test_a_failure_rate_fails_that_share_of_starts_with_docker_s_error_and_leaves_nothing() -> None:
    rt = runtime(failure_rate=0.3, seed=7)
    failed = 0
    for n in range(1, 201):
        try:
            await rt.start_instance(spec=spec(), number=n)
        except ContainerError as exc:
            assert exc.transient and "exited right after start" in str(exc)
            failed += 1
    assert 40 <= failed <= 80 and rt.failures == failed and rt.starts == 200
    assert len(await rt.list_managed()) == 200 - failed
    again = runtime(failure_rate=0.3, seed=7)  # the same seed fails the same starts
    outcomes = []
    for n in range(1, 201):
        try:
            await again.start_instance(spec=spec(), number=n)
            outcomes.append(True)
        except ContainerError:
            outcomes.append(False)
    assert outcomes.count(False) == failed
    with pytest.raises(ContainerError):
        await runtime(failure_rate=1.0).start_instance(spec=spec(), number=1)
    with pytest.raises(ValueError, match="failure_rate"):
        HollowOptions(failure_rate=1.5)


async def test_events_tell_start_die_and_destroy_and_close_ends_the_stream() -> None:
    rt = runtime()
    task, seen = await events_of(rt)
    c = await rt.start_instance(spec=spec(), number=1)
    assert rt.crash(c.id)
    assert not (await rt.inspect(c.id)).running  # type: ignore[union-attr]
    again = await rt.restart_instance(c, spec=spec())
    assert again.running and again.id == c.id and again.ports == c.ports
    await rt.remove(c.id, grace=5)
    await rt.remove(c.id, grace=5)  # absent is fine
    await asyncio.sleep(0)
    assert seen == [("start", c.id), ("die", c.id), ("start", c.id), ("die", c.id), ("destroy", c.id)]
    await rt.close()
    await asyncio.wait_for(task, 1)
    with pytest.raises(ContainerError, match="No such container"):
        await rt.restart_instance(c, spec=spec())


async def test_an_operator_restart_stops_and_starts_the_same_container() -> None:
    rt = runtime()
    task, seen = await events_of(rt)
    c = await rt.start_instance(spec=spec(), number=1)
    again = await rt.restart_container(c, spec=spec(), grace=1.0, signal="SIGTERM")
    assert again.running and again.id == c.id and again.ports == c.ports
    assert rt.crash(c.id)
    with pytest.raises(ContainerError, match="not running"):  # (a stopped one is the reconciler's to start)
        await rt.restart_container(c, spec=spec(), grace=1.0)
    await asyncio.sleep(0)
    assert seen == [("start", c.id), ("die", c.id), ("start", c.id), ("die", c.id)]
    await rt.close()
    await asyncio.wait_for(task, 1)


async def test_an_event_carries_docker_s_labels() -> None:
    rt = runtime()
    got: list[dict[str, object]] = []

    async def first() -> None:
        async for ev in rt.events():
            got.append(ev)
            return

    task = asyncio.create_task(first())
    await asyncio.sleep(0)
    c = await rt.start_instance(spec=spec(), number=2)
    await asyncio.wait_for(task, 1)
    attrs = got[0]["Actor"]["Attributes"]  # type: ignore[index]
    assert got[0]["Type"] == "container" and attrs["daprdockr.node"] == "h1"  # type: ignore[index]
    assert attrs["daprdockr.instance"] == "2" and attrs["daprdockr.spec-hash"] == c.spec_hash  # type: ignore[index]


async def test_a_start_replaces_a_leftover_of_the_same_name_and_beside_gets_a_name_of_its_own() -> None:
    rt = runtime()
    old = await rt.start_instance(spec=spec(), number=1)
    new_spec = spec(env={"V": "2"})
    beside = await rt.start_instance(spec=new_spec, number=1, beside=True)
    assert {c.id for c in await rt.list_managed()} == {old.id, beside.id}
    assert await rt.find_instance(service=WEB, number=1) in (old, beside)
    replaced = await rt.start_instance(spec=spec(), number=1)
    assert {c.id for c in await rt.list_managed()} == {beside.id, replaced.id}


async def test_drain_health_and_logs() -> None:
    rt = runtime()
    c = await rt.start_instance(spec=spec(), number=1)
    assert await rt.drain(c, within=5) == 0
    assert await rt.exec_ok(c.id, ["true"], within=1) and await rt.docker_health(c.id) == "healthy"
    http = HealthCheck(kind="http", path="/", port=8080)
    assert await rt.network_check(c, http)
    assert not await rt.network_check(c, HealthCheck(kind="tcp", port=7777))  # not a published port
    rt.set_healthy(c.id, False)
    assert not await rt.exec_ok(c.id, ["true"], within=1) and await rt.docker_health(c.id) == "unhealthy"
    assert not await rt.network_check(c, http)
    rt.set_healthy(c.id, True)
    assert await rt.network_check(c, http)
    assert not await runtime(checks_pass=False).exec_ok(c.id, ["true"], within=1)
    lines = [line async for line in rt.logs(c.id, tail=100)]
    assert len(lines) == 2 and "daprdockr.h1.web.app.1" in lines[0]
    assert [line async for line in rt.logs(c.id, tail=1)] == lines[-1:]
    await rt.ping()
    assert await rt.container_networks() == []


async def test_a_reader_that_fell_behind_still_sees_the_stream_end() -> None:
    rt = runtime()
    stream = rt.events()
    first = asyncio.ensure_future(stream.__anext__())  # subscribed, reading nothing more
    await asyncio.sleep(0)
    for n in range(1, 400):  # more events than the backlog keeps
        await rt.start_instance(spec=spec(), number=n)
    await first
    await rt.close()
    rest = [ev async for ev in stream]
    assert 0 < len(rest) < 399
