"""The agent API under abuse: log streams, forged container ids, access beyond loopback
(real Docker, real etcd, real HTTP)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.agent.api import AgentApi
from daprdockr.agent.main import Agent
from daprdockr.agent.status import AgentStatus
from daprdockr.core.jsondata import dumps
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from daprdockr.core.state import RawKV
from tests.agent.cluster import agent_config, local_cluster, wait_for
from tests.support.procs import free_port

pytestmark = [pytest.mark.etcd, pytest.mark.docker]
WEB = ServiceName(group="myapp", service="web")
LOUD = ["sh", "-c", "while true; do echo line-$DAPRDOCKR_INSTANCE; sleep 0.2; done"]


async def test_log_streams_are_capped_and_never_starve_reconcile(
    store: EtcdStore, etcd_endpoints: str, prefix: str, docker_image: str, tmp_path: Path
) -> None:
    api = ("127.0.0.11", free_port("127.0.0.11"))
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=1, node_prefix="lg",
                             per_node=lambda i, ip: {"api_listen": api}) as agents:
        agent = agents[0].agent
        await VersionStore(store).put_service(
            ServiceSpec.from_dict({"image": docker_image, "instances": 1, "cmd": LOUD}, name=WEB))
        await wait_for(store, lambda s: any(r.state == "running" for r in s.instances_of(WEB)))
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            responses = await asyncio.gather(*(
                http.get(f"http://{api[0]}:{api[1]}/v1/logs/myapp/web/1?follow=1&tail=1") for _ in range(100)))
            try:
                statuses = sorted(r.status for r in responses)
                assert statuses.count(200) == 16 and statuses.count(429) == 84, statuses
                t0 = time.monotonic()
                listed = await asyncio.wait_for(agent.runtime.list_managed(), 5)
                print(f"listing with 16 log streams open took {time.monotonic() - t0:.3f}s")
                assert [c.number for c in listed] == [1]
                first = next(r for r in responses if r.status == 200)
                assert b"line-1" in await asyncio.wait_for(first.content.readline(), 5)
            finally:
                for r in responses:
                    r.close()


async def _api_only(tmp_path: Path, etcd: str, prefix: str, *, listen: tuple[str, int],
                    token: str = "") -> tuple[Agent, AgentApi]:
    """A real Agent object (real Docker runtime) whose mirror we set by hand, serving only its API."""
    agent = Agent(replace(agent_config(etcd=etcd, prefix=prefix, node="ap1", ip="127.0.0.11", tmp=tmp_path)))
    api = AgentApi(view=AgentStatus(agent), logs=agent.runtime, listen=listen, token=token)
    await api.start()
    return agent, api


async def test_logs_never_follow_a_container_id_from_etcd(etcd_endpoints: str, prefix: str, docker_image: str,
                                                         tmp_path: Path) -> None:
    foreign = subprocess.run(["docker", "run", "-d", docker_image, "sh", "-c", "echo secret-of-someone-else; "
                              "sleep 60"], capture_output=True, text=True, check=True).stdout.strip()
    listen = ("127.0.0.11", free_port("127.0.0.11"))
    agent, api = await _api_only(tmp_path, etcd_endpoints, prefix, listen=listen)
    try:
        forged = InstanceRecord(service=WEB, number=1, node="ap1", address="127.0.0.11", state="running",
                                container_id=foreign)
        agent.mirror.reset([RawKV(key=agent.schema.instance(WEB, 1), value=dumps(forged.to_dict()), lease=7,
                                  create_revision=3, mod_revision=3)], revision=3)
        await asyncio.sleep(1)
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://{listen[0]}:{listen[1]}/v1/logs/myapp/web/1") as resp:
            body = await resp.text()
        assert "secret-of-someone-else" not in body
        assert resp.status == 404
    finally:
        await api.stop()
        await agent.runtime.close()
        subprocess.run(["docker", "rm", "-f", foreign], capture_output=True)


async def test_beyond_loopback_logs_need_the_token_but_health_and_metrics_stay_open(
    etcd_endpoints: str, prefix: str, tmp_path: Path
) -> None:
    port = free_port("127.0.0.1")
    token = "t" * 32
    agent, api = await _api_only(tmp_path, etcd_endpoints, prefix, listen=("0.0.0.0", port), token=token)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/v1/logs/myapp/web/1") as resp:
                assert resp.status == 401
            async with http.get(f"{base}/v1/logs/myapp/web/1", headers={"Authorization": "Bearer wrong"}) as resp:
                assert resp.status == 401
            async with http.get(f"{base}/v1/logs/myapp/web/1", headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 404  # authorized; there is no such instance here
            async with http.get(f"{base}/metrics") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status in (200, 503)  # open; the lease of this unstarted agent is not alive
    finally:
        await api.stop()
        await agent.runtime.close()
