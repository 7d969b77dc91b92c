"""Slow and paused instances on a real cluster: 3 etcd members, 3 agent processes (nginx with the
Lua balancer, DNS), 6 real busybox httpd containers, real ``wrk`` and ``hey``.

* ``docker pause`` of one instance under wrk: no failed request, the record and ``ps`` say
  ``paused``, the container is never replaced (same id after ``docker unpause``), it leaves the
  routing table while paused and is routed again after;
* the processes of one, then two, of the six containers stopped (SIGSTOP: the kernel still
  accepts their connections, nothing answers): no request fails under wrk, and hey's requests
  that waited over 1 s are at most 4 per frozen container.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from tests.conftest import missing
from tests.e2e.probes import IDENTITY_CMD, eventually, http_sample
from tests.e2e.realcluster import RealCluster, real_cluster
from tests.support.loadrun import container_pids, freeze, hey, wrk

pytestmark = [pytest.mark.slow, pytest.mark.etcd, pytest.mark.docker, pytest.mark.nginx, pytest.mark.timeout(300)]
WEB = ServiceName(group="pf", service="web")
HOST = "web.pf.test"


@pytest.fixture
async def cluster(prefix: str, docker_image: str) -> AsyncIterator[tuple[RealCluster, EtcdStore]]:
    if not shutil.which("wrk") or not shutil.which("hey"):
        missing("wrk and hey")
    workdir = Path(tempfile.mkdtemp(prefix="daprdockr-pf-"))
    with real_cluster(workdir, prefix=prefix, node_prefix="p") as c:
        async with EtcdStore(endpoints=parse_endpoints(c.endpoints), schema=KeySchema(prefix)) as store:
            await store.put_service(ServiceSpec.from_dict(
                {"image": docker_image, "instances": 6, "http_host": HOST, "http_port": 8080, "cmd": IDENTITY_CMD},
                name=WEB))
            await wait_identities(c, 6)
            yield c, store
    shutil.rmtree(workdir, ignore_errors=True)


def edge(c: RealCluster) -> tuple[str, int]:
    a = next(iter(c.agents.values())).addr
    return a.ip, a.http_port


async def identities(c: RealCluster) -> set[str]:
    ip, port = edge(c)
    async with aiohttp.ClientSession() as s:
        sample = await http_sample(s, ip=ip, port=port, host=HOST, count=60)
    return set(sample.identities)


async def wait_identities(c: RealCluster, n: int) -> set[str]:
    got = await eventually(lambda: identities(c), lambda ids: len(ids) == n, timeout=60)
    assert len(got) == n, got
    return got


def container_of(c: RealCluster, number: int) -> str:
    out = subprocess.run(["docker", "ps", "-a", "--no-trunc", "--filter", "label=daprdockr.group=pf",
                          "--filter", f"label=daprdockr.instance={number}", "--format", "{{.ID}}"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert len(out) == 1, out
    return out[0]


def ps_states(c: RealCluster) -> dict[int, str]:
    rows = json.loads(c.cli("ps", "--json").stdout)
    return {int(r["instance"]): r["state"] for r in rows if r["service"] == str(WEB)}


async def test_a_paused_container_is_kept_taken_out_and_routed_again(
    cluster: tuple[RealCluster, EtcdStore]
) -> None:
    c, _ = cluster
    ip, port = edge(c)
    before = container_of(c, 1)
    load = asyncio.create_task(wrk(f"http://{ip}:{port}/id", host=HOST, seconds=10))
    await asyncio.sleep(1)
    subprocess.run(["docker", "pause", before], check=True, capture_output=True)
    try:
        states = await eventually(lambda: asyncio.to_thread(ps_states, c), lambda s: s.get(1) == "paused", timeout=10)
        assert states.get(1) == "paused", states
        ids = await identities(c)
        assert len(ids) == 5 and not any(i.startswith("1 ") for i in ids), ids
        await asyncio.sleep(4)  # far past the agent's restart decision (it replaced it after ~2 s before)
        assert container_of(c, 1) == before
        assert ps_states(c).get(1) == "paused"
    finally:
        subprocess.run(["docker", "unpause", before], check=True, capture_output=True)
    run = await load
    assert run.failed == 0 and run.requests > 0, run.detail
    await wait_identities(c, 6)
    assert container_of(c, 1) == before
    assert ps_states(c).get(1) == "running"


@pytest.mark.parametrize("frozen", [1, 2])
async def test_frozen_containers_fail_no_request_and_hold_few(cluster: tuple[RealCluster, EtcdStore],
                                                              frozen: int) -> None:
    c, _ = cluster
    ip, port = edge(c)
    url = f"http://{ip}:{port}/id"
    victims = [pid for n in range(1, frozen + 1) for pid in container_pids(container_of(c, n))]
    assert victims
    slow = asyncio.create_task(hey(url, host=HOST, requests=3000, qps=500, timeout=30))  # 6 s
    load = asyncio.create_task(wrk(url, host=HOST, seconds=6, connections=8))
    await asyncio.sleep(1)
    freeze(victims)
    try:
        await asyncio.sleep(4)
    finally:
        freeze(victims, thaw=True)
    run, timed = await load, await slow
    assert run.failed == 0, run.detail
    assert timed.failed == 0
    assert timed.slower_than(1.0) <= 4 * frozen, sorted(timed.times)[-12:]
