"""Failover and rejoin with real agent processes: SIGKILL, lease expiry, stale copies, etcd loss."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from tests.agent.cluster import local_cluster, remove_node_containers, spawn_agent, wait_for
from tests.agent.test_agent_docker import docker_ids, running, web
from tests.support.procs import EtcdCluster

pytestmark = [pytest.mark.etcd, pytest.mark.docker, pytest.mark.slow]
WEB = ServiceName(group="myapp", service="web")
TTL = 2


async def test_sigkilled_agent_fails_over_and_its_stale_copies_stop_on_rejoin(
    store: EtcdStore, etcd_endpoints: str, prefix: str, docker_image: str, tmp_path: Path
) -> None:
    nodes = {f"n{i}": f"127.0.0.{10 + i}" for i in (1, 2, 3)}
    procs = {
        n: spawn_agent(etcd=etcd_endpoints, prefix=prefix, node=n, ip=ip, state_dir=tmp_path, ttl=TTL)
        for n, ip in nodes.items()
    }
    try:
        await wait_for(store, lambda s: set(s.nodes) == set(nodes), timeout=20)
        await asyncio.sleep(1.2)
        await VersionStore(store).put_service(web(docker_image, 6))
        # 2 each: by the claims (or rebalancing, for a node seconds behind on a loaded host)
        state = await wait_for(store, lambda s: len(running(s)) == 6
                               and sorted(Counter(r.node for r in s.instances_of(WEB)).values()) == [2, 2, 2],
                               timeout=60)
        victim = "n1"
        lost = {r.number for r in state.instances_of(WEB) if r.node == victim}

        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait()
        t0 = time.monotonic()
        state = await wait_for(
            store,
            lambda s: len(running(s)) == 6 and all(r.node != victim for r in s.instances_of(WEB)),
            timeout=TTL + 10,
        )
        elapsed = time.monotonic() - t0
        assert elapsed < TTL + 8, f"failover took {elapsed:.1f}s"
        assert victim not in state.nodes
        # the dead agent's containers still run (nobody stopped them): stale copies
        stale = docker_ids(victim)
        assert sorted(stale, key=int) == sorted(map(str, lost), key=int)

        # restart the killed agent: it must stop its stale copies (others hold those numbers)
        procs[victim] = spawn_agent(
            etcd=etcd_endpoints, prefix=prefix, node=victim, ip=nodes[victim], state_dir=tmp_path, ttl=TTL
        )
        deadline = time.monotonic() + 20
        while docker_ids(victim) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert docker_ids(victim) == {}
        # and no instance number runs twice anywhere
        ids = docker_ids(*nodes)
        assert sorted(ids, key=int) == [str(n) for n in range(1, 7)]
        assert all(len(v) == 1 for v in ids.values())
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        remove_node_containers(list(nodes))


async def test_sigterm_releases_everything(
    store: EtcdStore, etcd_endpoints: str, prefix: str, docker_image: str, tmp_path: Path
) -> None:
    proc = spawn_agent(etcd=etcd_endpoints, prefix=prefix, node="n7", ip="127.0.0.17", state_dir=tmp_path)
    try:
        await wait_for(store, lambda s: "n7" in s.nodes, timeout=20)
        await VersionStore(store).put_service(web(docker_image, 2))
        await wait_for(store, lambda s: running(s) == [1, 2])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        state = await store.snapshot()
        assert "n7" not in state.nodes and not state.instances
        assert docker_ids("n7") == {}
    finally:
        if proc.poll() is None:
            proc.kill()
        remove_node_containers(["n7"])


async def test_a_second_signal_exits_at_once_and_takes_nginx_along(
    store: EtcdStore, etcd_endpoints: str, prefix: str, docker_image: str, tmp_path: Path
) -> None:
    from tests.support.procs import free_port

    ip = "127.0.0.18"
    proc = spawn_agent(etcd=etcd_endpoints, prefix=prefix, node="n8", ip=ip, state_dir=tmp_path,
                       extra=("--http-listen", f"{ip}:{free_port(ip)}"))
    try:
        await wait_for(store, lambda s: "n8" in s.nodes, timeout=20)
        stubborn = ServiceSpec.from_dict({"image": docker_image, "instances": 1, "stop_timeout": "60s",
                                          "cmd": ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]}, name=WEB)
        await VersionStore(store).put_service(stubborn)
        await wait_for(store, lambda s: running(s) == [1])
        nginx = int((tmp_path / "n8" / "nginx" / "nginx.pid").read_text())
        proc.send_signal(signal.SIGTERM)  # shutdown starts: the container ignores SIGTERM for its 60 s grace
        await asyncio.sleep(1.0)
        assert proc.poll() is None, "the first signal must shut down in order, not exit"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 128 + signal.SIGTERM
        assert time.monotonic() - t0 < 30  # (not after the container's 60 s grace)
        for _ in range(50):
            if not Path(f"/proc/{nginx}").exists() or Path(f"/proc/{nginx}/stat").read_text().split()[2] == "Z":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("nginx outlived the agent's second signal")
    finally:
        if proc.poll() is None:
            proc.kill()
        remove_node_containers(["n8"])


async def test_losing_etcd_keeps_containers_running(
    docker_image: str, tmp_path: Path, prefix: str
) -> None:
    etcd = EtcdCluster(tmp_path / "etcd", size=1)
    (tmp_path / "etcd").mkdir()
    etcd.start()
    try:
        async with (
            EtcdStore(endpoints=parse_endpoints(etcd.endpoints), schema=KeySchema(prefix)) as store,
            local_cluster(etcd=etcd.endpoints, prefix=prefix, tmp=tmp_path, nodes=1, node_prefix="loss"),
        ):
            await VersionStore(store).put_service(web(docker_image, 2))
            before = await wait_for(store, lambda s: running(s) == [1, 2])
            ids = {r.number: r.container_id for r in before.instances_of(WEB)}
            etcd.stop()
            await asyncio.sleep(TTL * 2 + 1)  # longer than the lease TTL
            assert sorted(docker_ids("loss1")) == ["1", "2"], "containers must survive an etcd outage"
            etcd.start_member(etcd.members[0])
            etcd.wait_healthy()
            after = await wait_for(store, lambda s: running(s) == [1, 2] and "loss1" in s.nodes, timeout=20)
            assert {r.number: r.container_id for r in after.instances_of(WEB)} == ids
    finally:
        etcd.stop()
