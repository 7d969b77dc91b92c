"""End to end on a real cluster: 3 etcd members, 3 agent processes (simulated hosts on
127.0.0.11/12/13, each with its own DNS server and nginx), the real CLI, real Docker.

One service of 6 instances is set with ``daprdockr svc set``; then, from the outside:

* ``docker ps`` shows every instance number exactly once, spread 2/2/2 over the hosts, each on
  the node etcd names;
* ``dig`` against every agent resolves ``<n>.web.myapp.container`` to the owner's address, and
  SRV (per instance and per ``_8080._tcp`` service name) gives the published
  host ports;
* HTTP with ``Host: web.myapp.test`` through every agent's nginx reaches all 6 containers;
* ``daprdockr svc del`` removes everything: containers, DNS names (NXDOMAIN), routes (404).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import aiohttp
import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState
from tests.agent.cluster import wait_for
from tests.e2e.probes import (
    IDENTITY_CMD,
    dig,
    dig_until,
    docker_containers,
    eventually,
    has_records,
    http_sample,
    numbers_running,
    routed_identities,
)
from tests.e2e.realcluster import RealCluster, real_cluster

pytestmark = [pytest.mark.slow, pytest.mark.etcd, pytest.mark.docker, pytest.mark.nginx,
              pytest.mark.timeout(240)]
WEB = ServiceName(group="myapp", service="web")
HOST = "web.myapp.test"


def running(state: ClusterState) -> dict[int, str]:
    """Instance number -> owning node, of the running instances of web.myapp."""
    return {r.number: r.node for r in state.instances_of(WEB) if r.state == "running"}


@pytest.fixture
async def cluster(tmp_path: Path, prefix: str, docker_image: str) -> AsyncIterator[RealCluster]:
    with real_cluster(tmp_path, prefix=prefix, node_prefix="e") as c:
        await asyncio.sleep(1.5)  # every agent saw the others before the service appears
        yield c


@pytest.fixture
async def store(cluster: RealCluster, prefix: str) -> AsyncIterator[EtcdStore]:
    async with EtcdStore(endpoints=parse_endpoints(cluster.endpoints), schema=KeySchema(prefix)) as s:
        yield s


async def test_six_instances_spread_resolve_route_and_vanish(
    cluster: RealCluster, store: EtcdStore, docker_image: str
) -> None:
    cluster.cli(
        "svc", "set", str(WEB), "--image", docker_image, "--instances", "6",
        "--http-host", HOST, "--http-port", "8080", *(f"--cmd={a}" for a in IDENTITY_CMD),
    )
    assert cluster.cli("svc", "get", str(WEB)).stdout.count('"instances": 6') == 1
    state = await wait_for(store, lambda s: len(running(s)) == 6, timeout=60)
    owners = running(state)
    records = {r.number: r for r in state.instances_of(WEB)}

    # docker ps: each number exactly once, on the node etcd names, spread 2/2/2
    containers = docker_containers(cluster.node_ids, service="web", group="myapp")
    assert numbers_running(containers) == Counter(range(1, 7))
    assert {c.number: c.node for c in containers} == owners
    assert {c.number: c.container_id for c in containers} == {n: r.container_id for n, r in records.items()}
    assert sorted(Counter(owners.values()).values()) == [2, 2, 2]
    assert {r.address for r in records.values()} == {cluster.agents[n].addr.ip for n in cluster.node_ids}

    # DNS, against every agent: A -> the owner's address, SRV -> the published host port
    for agent in cluster.agents.values():
        a = agent.addr
        for n, rec in records.items():
            answer = await dig_until(a.ip, a.dns_port, f"{n}.web.myapp.container", has_records(rec.address))
            assert answer.ok and answer.records == (rec.address,), (agent.node_id, n, answer)
            srv = dig(a.ip, a.dns_port, f"{n}.web.myapp.container", "SRV")
            assert srv.records == (f"0 0 {rec.port_for(8080)} {n}.web.myapp.container.",), (agent.node_id, srv)
        by_port = dig(a.ip, a.dns_port, "_8080._tcp.web.myapp.container", "SRV")
        assert sorted(by_port.records) == sorted(
            f"0 0 {r.port_for(8080)} {n}.web.myapp.container." for n, r in records.items()
        ), (agent.node_id, by_port)
        service_a = dig(a.ip, a.dns_port, "web.myapp.container")
        assert sorted(service_a.records) == sorted({r.address for r in records.values()})  # one per host
        assert dig(a.ip, a.dns_port, "7.web.myapp.container").status == "NXDOMAIN"

    # HTTP through every agent's nginx reaches all six containers (identity = "<n> <node>")
    want = {f"{n} {node}" for n, node in owners.items()}
    async with aiohttp.ClientSession() as session:
        for agent in cluster.agents.values():
            a = agent.addr
            got = await routed_identities(session, ip=a.ip, port=a.http_port, host=HOST, want=want, timeout=15)
            assert got == want, f"via {agent.node_id}: {sorted(got)} != {sorted(want)}"

        # delete -> containers, names and routes are gone
        cluster.cli("svc", "del", str(WEB))
        await wait_for(store, lambda s: not s.instances_of(WEB) and WEB not in s.services, timeout=30)
        leftover = await eventually(
            lambda: asyncio.to_thread(docker_containers, cluster.node_ids, service="web", group="myapp"),
            lambda c: not c, timeout=20,
        )
        assert leftover == []
        for agent in cluster.agents.values():
            a = agent.addr
            gone = await dig_until(a.ip, a.dns_port, "1.web.myapp.container", lambda r: r.status == "NXDOMAIN")
            assert gone.status == "NXDOMAIN", (agent.node_id, gone)
            sample = await eventually(
                partial(http_sample, session, ip=a.ip, port=a.http_port, host=HOST, count=3),
                lambda s: set(s.statuses) == {404}, timeout=10,
            )
            assert set(sample.statuses) == {404}, (agent.node_id, sample.statuses)
    assert cluster.cli("svc", "get", str(WEB), check=False).returncode == 3
