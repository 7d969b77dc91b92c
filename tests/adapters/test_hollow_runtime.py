"""The hollow runtime: containers in memory behind the runtime Protocol (``--runtime hollow``)."""

from __future__ import annotations

import asyncio

import pytest

from daprdockr.adapters.hollow_runtime import HollowOptions, HollowRuntime
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.errors import ContainerError

WEB = ServiceName.parse("web.app")


def spec() -> ServiceSpec:
    return ServiceSpec.from_dict({"image": "hollow", "instances": 3, "ports": [8080, "53/udp"]}, name=WEB)


async def test_a_start_runs_a_container_with_ports_and_emits_its_event() -> None:
    rt = HollowRuntime(node_id="h1", advertise_ip="127.0.0.11", options=HollowOptions(start_delay=0.01))
    events = rt.events()
    first = asyncio.ensure_future(events.__anext__())
    c = await rt.start_instance(spec=spec(), number=2)
    assert c.running and c.node == "h1" and c.number == 2 and c.spec_hash == spec().runtime_hash
    assert dict(c.ports).keys() == {"8080/tcp", "53/udp"} and len(set(dict(c.ports).values())) == 2
    assert (await asyncio.wait_for(first, 1))["Action"] == "start"
    assert await rt.list_managed() == [c] and await rt.inspect(c.id) == c
    await rt.remove(c.id, grace=0)
    assert await rt.list_managed() == [] and await rt.inspect(c.id) is None
    await rt.close()


async def test_the_failure_rate_fails_that_share_of_starts_with_a_transient_error() -> None:
    rt = HollowRuntime(node_id="h1", advertise_ip="127.0.0.11", options=HollowOptions(failure_rate=0.5, seed=7))
    failed = 0
    for number in range(1, 201):
        try:
            await rt.start_instance(spec=spec(), number=number)
        except ContainerError as exc:
            assert exc.transient
            failed += 1
    assert 60 < failed < 140 and rt.failures == failed and rt.starts == 200
    assert len(await rt.list_managed()) == 200 - failed


async def test_a_crash_stops_the_container_and_a_start_again_keeps_its_ports() -> None:
    rt = HollowRuntime(node_id="h1", advertise_ip="127.0.0.11")
    c = await rt.start_instance(spec=spec(), number=1)
    assert rt.crash(c.id)
    stopped = await rt.inspect(c.id)
    assert stopped is not None and not stopped.running
    again = await rt.restart_instance(stopped, spec=spec())
    assert again.running and again.ports == c.ports


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError):
        HollowOptions(failure_rate=1.5)
    with pytest.raises(ValueError):
        HollowOptions(start_delay=-1)
