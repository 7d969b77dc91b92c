"""The Docker adapter uses aiodocker's public API only: the listings (``containers.list``), the
bridge network (``networks.get(...).show()``) and the event stream (``events.subscribe``/``run``) that
replaced its private ``_query``/``_query_json``, proven on the real engine; and a scan of
``src`` that fails when a private aiodocker attribute is used again."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import json
import subprocess
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from daprdockr.adapters.docker_runtime import DockerRuntime
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.errors import DaprDockrError

SRC = Path(__file__).resolve().parents[2] / "src" / "daprdockr"


def aiodocker_private_names() -> set[str]:
    """Every ``_name`` (not dunder) an aiodocker class defines."""
    names: set[str] = set()
    for module in (aiodocker.docker, aiodocker.containers, aiodocker.images, aiodocker.networks,
                   aiodocker.events, aiodocker.execs):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__.startswith("aiodocker"):
                names |= {n for n in vars(cls) if n.startswith("_") and not n.startswith("__")}
                names |= {n for n in getattr(cls, "__annotations__", {}) if n.startswith("_")}
    return names


def test_src_uses_no_private_aiodocker_attribute() -> None:
    private = aiodocker_private_names()
    assert {"_query", "_query_json", "_container"} <= private  # (the scan sees what it looks for)
    found = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        if not any(isinstance(n, ast.Import | ast.ImportFrom) and "aiodocker" in ast.unparse(n)
                   for n in ast.walk(tree)):
            continue
        for node in ast.walk(tree):  # x.y._name, x()._name...: never self._name, our own attribute
            if (isinstance(node, ast.Attribute) and node.attr in private
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def spec_of(image: str, group: str) -> ServiceSpec:
    return ServiceSpec.from_dict({"image": image, "http_port": 8080, "cmd": ["httpd", "-f", "-p", "8080"]},
                                 name=ServiceName(group=group, service="web"))


@pytest.mark.docker
async def test_listings_see_this_nodes_containers_only_with_their_published_ports(docker_image: str) -> None:
    ours, theirs = (DockerRuntime(node_id=n, advertise_ip="127.0.0.11") for n in ("list1", "list2"))
    unlabelled = subprocess.run(["docker", "run", "-d", "--rm", docker_image, "sleep", "60"],
                                capture_output=True, text=True, check=True).stdout.strip()
    started = []
    try:
        mine = await ours.start_instance(spec=spec_of(docker_image, "lista"), number=1)
        started.append((ours, mine.id))
        other = await theirs.start_instance(spec=spec_of(docker_image, "lista"), number=1)
        started.append((theirs, other.id))
        listed = await ours.list_managed()
        assert [c.id for c in listed] == [mine.id]
        assert listed[0].ports == mine.ports and mine.ports and listed[0].serving and listed[0].created > 0
        found = await ours.find_instance(service=mine.service, number=1)
        assert found is not None and found.id == mine.id and found.ports == mine.ports
        assert await ours.find_instance(service=mine.service, number=2) is None
    finally:
        for runtime, container_id in started:
            await runtime.remove(container_id, grace=0)
        subprocess.run(["docker", "rm", "-f", unlabelled], capture_output=True)
        await ours.close()
        await theirs.close()


@pytest.mark.docker
async def test_the_bridge_networks_subnets_are_dockers() -> None:
    runtime = DockerRuntime(node_id="net1", advertise_ip="127.0.0.11")
    try:
        subnets = await runtime.container_networks()
    finally:
        await runtime.close()
    shown = json.loads(subprocess.run(["docker", "network", "inspect", "bridge"], capture_output=True, text=True,
                                      check=True).stdout)[0]
    assert subnets and subnets == [c["Subnet"] for c in shown["IPAM"]["Config"] if c.get("Subnet")]


async def next_event(events: Any, *, seconds: float = 20) -> dict[str, Any]:
    async with asyncio.timeout(seconds):
        event: dict[str, Any] = await anext(events)
        return event


@pytest.mark.docker
async def test_events_are_this_nodes_and_a_closed_stream_can_be_opened_again(docker_image: str) -> None:
    ours, theirs = (DockerRuntime(node_id=n, advertise_ip="127.0.0.11") for n in ("ev1", "ev2"))
    started = []
    try:
        events = ours.events()
        first = asyncio.ensure_future(next_event(events))
        await asyncio.sleep(0.5)  # (the stream is open)
        other = await theirs.start_instance(spec=spec_of(docker_image, "eva"), number=1)
        started.append((theirs, other.id))
        mine = await ours.start_instance(spec=spec_of(docker_image, "eva"), number=1)
        started.append((ours, mine.id))
        event = await first
        assert event["Actor"]["ID"] == mine.id and event["Actor"]["Attributes"]["daprdockr.node"] == "ev1"
        await events.aclose()  # (its feed task ends with it)

        again = ours.events()
        second = asyncio.ensure_future(next_event(again))
        await asyncio.sleep(0.5)
        await ours.remove(mine.id, grace=0)
        event = await second
        assert event["Actor"]["ID"] == mine.id and event["Actor"]["Attributes"]["daprdockr.node"] == "ev1"

        await ours.close()  # the engine connection closed: the stream ends (or fails), never hangs
        async with asyncio.timeout(10):
            with contextlib.suppress(DaprDockrError):
                async for event in again:
                    assert event["Actor"]["ID"] == mine.id
    finally:
        for runtime, container_id in started:
            await runtime.remove(container_id, grace=0)
        await ours.close()
        await theirs.close()
