"""Hollow agents sharing one process and one event loop (:mod:`daprdockr.agent.hollow_cluster`),
against a real etcd: they converge despite failing starts, each runtime holds exactly the
instances etcd says it owns, the API and metrics say "hollow", and log lines name their node."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.hollow_runtime import HollowOptions
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.agent.hollow_cluster import HollowCluster, hollow_configs, run_hollow_cluster
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from tests.support.procs import free_port

pytestmark = pytest.mark.etcd
WEB = ServiceName(group="hollow", service="web")


def port_free_on(first: str, *others: str) -> int:
    for _ in range(100):
        port = free_port(first)
        try:
            for ip in others:
                with socket.socket() as s:
                    s.bind((ip, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on every address")


async def test_three_hollow_agents_in_one_loop_converge_despite_failing_starts(
    etcd_endpoints: str, prefix: str, tmp_path: Path, store: EtcdStore, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    port = port_free_on("127.0.0.11", "127.0.0.12", "127.0.0.13")  # one port, each agent's API on its address
    configs = hollow_configs(nodes=3, etcd=parse_endpoints(etcd_endpoints), prefix=prefix, state_dir=tmp_path,
                             options=HollowOptions(start_delay=0.02, failure_rate=0.25, seed=11), ttl=5,
                             api_port=port)
    assert [(c.node_id, c.advertise_ip) for c in configs] == [("h1", "127.0.0.11"), ("h2", "127.0.0.12"),
                                                               ("h3", "127.0.0.13")]
    async with HollowCluster(configs) as cluster:
        await asyncio.sleep(1.2)  # settled: every agent claims
        await VersionStore(store).put_service(
            ServiceSpec.from_dict({"image": "x", "instances": 30, "http_port": 80}, name=WEB))
        deadline = time.monotonic() + 30
        while True:
            state = await store.snapshot()
            if sum(r.state == "running" for r in state.instances.values()) == 30:
                break
            assert time.monotonic() < deadline, {r.number: r.state for r in state.instances.values()}
            await asyncio.sleep(0.2)

        assert sum(rt.failures for rt in cluster.runtimes.values()) > 0  # failing starts were retried
        owned = {(r.number, r.node, r.container_id) for r in state.instances.values()}
        runs = {(c.number, node, c.id) for node, rt in cluster.runtimes.items() for c in rt.containers if c.running}
        assert runs == owned
        assert sorted(sum(r.node == n for r in state.instances.values()) for n in ("h1", "h2", "h3")) == [10, 10, 10]
        assert {n.runtime for n in state.nodes.values()} == {"hollow"}

        async with aiohttp.ClientSession() as http:
            for ip in ("127.0.0.11", "127.0.0.13"):
                async with http.get(f"http://{ip}:{port}/healthz") as resp:
                    health = json.loads(await resp.text())
                assert resp.status == 200 and health["runtime"] == "hollow", health
                assert "no Docker" in health["checks"]["docker"]["detail"]
            async with http.get(f"http://127.0.0.12:{port}/metrics") as resp:
                assert "daprdockr_node_hollow 1" in await resp.text()
            async with http.get(f"http://127.0.0.12:{port}/v1/status") as resp:
                status = json.loads(await resp.text())
            assert status["node"]["id"] == "h2" and len(status["containers"]) == 10
    messages = [r.getMessage() for r in caplog.records if r.name == "daprdockr.agent.main"]
    assert any(m.startswith("[h3] agent h3 up") for m in messages), messages
    assert logging.getLogRecordFactory() is logging.LogRecord  # restored


async def test_run_hollow_cluster_runs_until_stopped(etcd_endpoints: str, prefix: str, tmp_path: Path,
                                                     store: EtcdStore) -> None:
    stop = asyncio.Event()
    seen: list[list[str]] = []

    def started(cluster: HollowCluster) -> None:
        seen.append(sorted(cluster.runtimes))
        stop.set()

    configs = hollow_configs(nodes=2, etcd=parse_endpoints(etcd_endpoints), prefix=prefix, state_dir=tmp_path,
                             node_prefix="r", first_ip=21)
    assert await asyncio.wait_for(run_hollow_cluster(configs, stop, on_started=started), 30) == 0
    assert seen == [["r1", "r2"]]
    assert not (await store.snapshot()).nodes  # each released its lease on the way out
    with pytest.raises(ValueError, match="loopback"):
        hollow_configs(nodes=3, etcd=(), prefix=prefix, state_dir=tmp_path, first_ip=253)
