"""Rebalancing on a real cluster (3 etcd members, 3 agent processes with nginx, real containers,
real ``wrk``): instances move, start-first with confirmed removal, until every node holds its fair
share within one, and no request fails meanwhile.

* a node that joins a cluster whose 12 instances run on two nodes gets 4;
* 50 concurrent writers of one service's spec (its instance count), then the service converges to
  within one of its fair share on every node;
* ``--rebalance off`` (and a service's ``rebalance: false``) moves nothing.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from tests.conftest import missing
from tests.e2e.probes import IDENTITY_CMD, eventually
from tests.e2e.realcluster import RealCluster, real_cluster
from tests.support.loadrun import wrk

pytestmark = [pytest.mark.slow, pytest.mark.etcd, pytest.mark.docker, pytest.mark.nginx, pytest.mark.timeout(300)]
WEB = ServiceName(group="rb", service="web")
HOST = "web.rb.test"


def spec(image: str, n: int, **extra: object) -> ServiceSpec:
    return ServiceSpec.from_dict({"image": image, "instances": n, "http_host": HOST, "http_port": 8080,
                                  "cmd": IDENTITY_CMD, "update": {"min_healthy": "1s", "deadline": "30s"}, **extra},
                                 name=WEB)


@pytest.fixture
async def cluster(prefix: str, docker_image: str) -> AsyncIterator[tuple[RealCluster, EtcdStore]]:
    if not shutil.which("wrk"):
        missing("wrk")
    workdir = Path(tempfile.mkdtemp(prefix="daprdockr-rb-"))
    with real_cluster(workdir, prefix=prefix, node_prefix="rb") as c:
        async with EtcdStore(endpoints=parse_endpoints(c.endpoints), schema=KeySchema(prefix)) as store:
            yield c, store
    shutil.rmtree(workdir, ignore_errors=True)


async def spread(store: EtcdStore, n: int) -> Counter[str]:
    state = await store.snapshot()
    return Counter(r.node for r in state.instances_of(WEB) if r.routable and r.number <= n)


async def converged(store: EtcdStore, n: int, nodes: int, *, timeout: float) -> Counter[str]:
    def even(c: Counter[str]) -> bool:
        return sum(c.values()) == n and len(c) == nodes and max(c.values()) - min(c.values()) <= 1

    return await eventually(lambda: spread(store, n), even, timeout=timeout)


def edge_url(c: RealCluster) -> str:
    a = next(iter(c.agents.values())).addr
    return f"http://{a.ip}:{a.http_port}/id"


async def test_a_node_that_joins_gets_its_share_and_no_request_fails(
    cluster: tuple[RealCluster, EtcdStore], docker_image: str
) -> None:
    c, store = cluster
    late = list(c.agents.values())[2]
    assert late.terminate() == 0  # (no instance yet: nothing to release)
    await VersionStore(store).put_service(spec(docker_image, 12))
    two = await converged(store, 12, 2, timeout=90)
    assert sorted(two.values()) == [6, 6], two
    load = asyncio.create_task(wrk(edge_url(c), host=HOST, seconds=30, connections=8))
    await asyncio.sleep(1)
    late.start()
    try:
        three = await converged(store, 12, 3, timeout=28)
        assert sorted(three.values()) == [4, 4, 4], three
    except AssertionError:
        c.dump_logs(40)
        raise
    run = await load
    assert run.failed == 0 and run.requests > 0, run.detail


async def test_fifty_concurrent_writers_then_convergence_within_one_of_the_fair_share(
    cluster: tuple[RealCluster, EtcdStore], docker_image: str
) -> None:
    c, store = cluster
    sizes = [(i * 17) % 39 + 1 for i in range(50)]

    async def writer(i: int, n: int) -> None:  # 50 writers, overlapping, each its own count
        await asyncio.sleep(i * 0.15)
        await VersionStore(store).put_service(spec(docker_image, n))

    await asyncio.gather(*(writer(i, n) for i, n in enumerate(sizes)))
    await VersionStore(store).put_service(spec(docker_image, 39))  # (whichever write was last: now 39)
    placed = await eventually(lambda: spread(store, 39), lambda s: sum(s.values()) == 39, timeout=150)
    print(f"after the writers: {dict(placed)}")
    done = asyncio.Event()
    failed = requests = 0

    async def load() -> None:  # wrk in 5 s segments until the moves are over
        nonlocal failed, requests
        while not done.is_set():
            run = await wrk(edge_url(c), host=HOST, seconds=5, connections=8)
            failed, requests = failed + run.failed, requests + run.requests

    loader = asyncio.create_task(load())
    try:
        final = await converged(store, 39, 3, timeout=150)
    except AssertionError:
        c.dump_logs(40)
        raise
    finally:
        done.set()
        await loader
    assert sorted(final.values()) == [13, 13, 13], final
    assert failed == 0 and requests > 0, (failed, requests)


async def test_a_service_that_opts_out_is_not_moved(cluster: tuple[RealCluster, EtcdStore], docker_image: str) -> None:
    c, store = cluster
    late = list(c.agents.values())[2]
    assert late.terminate() == 0
    await VersionStore(store).put_service(spec(docker_image, 6, rebalance=False))
    two = await converged(store, 6, 2, timeout=90)
    late.start()
    c.wait_registered()
    await asyncio.sleep(6)  # far past a move's start, check and cool-down
    assert await spread(store, 6) == two
