"""Agents against real etcd and a real Docker engine, simulating hosts on one engine."""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState
from tests.agent.cluster import local_cluster, wait_for

pytestmark = [pytest.mark.etcd, pytest.mark.docker]
WEB = ServiceName(group="myapp", service="web")


def web(image: str, instances: int, **extra: object) -> ServiceSpec:
    return ServiceSpec.from_dict(
        {"image": image, "instances": instances, "http_port": 8080,
         "cmd": ["httpd", "-f", "-p", "8080", "-h", "/www"], **extra},
        name=WEB,
    )


def running(state: ClusterState, name: ServiceName = WEB) -> list[int]:
    return sorted(r.number for r in state.instances_of(name) if r.state == "running")


async def until(predicate: Callable[[], bool], *, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.1)


def docker_ids(*nodes: str) -> dict[str, list[str]]:
    """Running containers per instance label, straight from `docker ps` (the ground truth)."""
    out = subprocess.run(
        ["docker", "ps", "--format", '{{.ID}} {{.Label "daprdockr.node"}} {{.Label "daprdockr.instance"}}',
         "--filter", "label=daprdockr.service=web"],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")
    result: dict[str, list[str]] = {}
    for line in filter(None, out):
        cid, node, n = line.split()
        if node in nodes:
            result.setdefault(n, []).append(cid)
    return result


async def test_scale_up_down_delete(store: EtcdStore, etcd_endpoints: str, prefix: str,
                                    docker_image: str, tmp_path: Path) -> None:
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=1):
        await VersionStore(store).put_service(web(docker_image, 3))
        state = await wait_for(store, lambda s: running(s) == [1, 2, 3])
        assert all(r.port_for(8080) for r in state.instances_of(WEB))
        assert sorted(docker_ids("n1")) == ["1", "2", "3"]
        await VersionStore(store).put_service(web(docker_image, 1))
        await wait_for(store, lambda s: [r.number for r in s.instances_of(WEB)] == [1])
        # release before stop: the keys go first, the containers stop once etcd confirmed that
        await until(lambda: sorted(docker_ids("n1")) == ["1"], timeout=10)
        await VersionStore(store).delete_service(WEB)
        await wait_for(store, lambda s: not s.instances)
        await until(lambda: docker_ids("n1") == {}, timeout=10)


async def test_three_agents_spread_evenly_without_duplicates(
    store: EtcdStore, etcd_endpoints: str, prefix: str, docker_image: str, tmp_path: Path
) -> None:
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=3):
        await asyncio.sleep(1.2)  # all three registered and settled
        await VersionStore(store).put_service(web(docker_image, 9))
        # 3 each: by the claims (a node seconds behind the others may lose its share on a loaded
        # host, so the bound also lets rebalancing even it out)
        state = await wait_for(store, lambda s: len(running(s)) == 9
                               and sorted(Counter(r.node for r in s.instances_of(WEB)).values()) == [3, 3, 3],
                               timeout=60)
        # addresses follow the owning node's advertise IP
        assert {r.node: r.address for r in state.instances_of(WEB)} == {
            "n1": "127.0.0.11", "n2": "127.0.0.12", "n3": "127.0.0.13"}
        # (a move's old container leaves once its key moved)
        await until(lambda: all(len(v) == 1 for v in docker_ids("n1", "n2", "n3").values()), timeout=30)
        ids = docker_ids("n1", "n2", "n3")
        await asyncio.sleep(2.5)  # longer than the 2 s relist: a duplicate would have been started by now
        again = docker_ids("n1", "n2", "n3")
        assert sorted(again, key=int) == [str(n) for n in range(1, 10)]
        assert all(len(v) == 1 for v in again.values()) and again == ids, "something moved at steady state"


async def test_a_killed_container_runs_again(store: EtcdStore, etcd_endpoints: str, prefix: str,
                                             docker_image: str, tmp_path: Path) -> None:
    """Started again as it is (docker start: its writable layer kept, as Docker's restart policy
    does); the record follows.  (A crash loop gets new containers: tests/test_reconcile.py.)"""
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=1):
        await VersionStore(store).put_service(web(docker_image, 1))
        state = await wait_for(store, lambda s: running(s) == [1])
        old = state.instances[(WEB, 1)]
        subprocess.run(["docker", "kill", old.container_id], check=True, capture_output=True)
        state = await wait_for(
            store, lambda s: running(s) == [1] and s.instances[(WEB, 1)].since > old.since, timeout=10
        )
        assert state.instances[(WEB, 1)].container_id == old.container_id
        assert docker_ids("n1") == {"1": [old.container_id[:12]]}


async def test_spec_change_replaces_container(store: EtcdStore, etcd_endpoints: str, prefix: str,
                                              docker_image: str, tmp_path: Path) -> None:
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=1):
        await VersionStore(store).put_service(web(docker_image, 1))
        first = (await wait_for(store, lambda s: running(s) == [1])).instances[(WEB, 1)]
        changed = web(docker_image, 1, env={"COLOR": "blue"})
        await VersionStore(store).put_service(changed)
        state = await wait_for(
            store, lambda s: running(s) == [1] and s.instances[(WEB, 1)].spec_hash == changed.runtime_hash
        )
        second = state.instances[(WEB, 1)]
        assert second.container_id != first.container_id
        env = subprocess.run(["docker", "inspect", "-f", "{{json .Config.Env}}", second.container_id],
                             capture_output=True, text=True, check=True).stdout
        assert "COLOR=blue" in env


async def test_bad_image_is_an_error_state_and_agent_stays_healthy(
    store: EtcdStore, etcd_endpoints: str, prefix: str, docker_image: str, tmp_path: Path
) -> None:
    bad = ServiceName(group="myapp", service="bad")
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=1) as (agent,):
        await VersionStore(store).put_service(
            ServiceSpec(name=bad, image="daprdockr-test/does-not-exist:1", instances=1))
        state = await wait_for(store, lambda s: any(r.state == "failed" for r in s.instances_of(bad)))
        assert "not available" in state.instances[(bad, 1)].error
        await VersionStore(store).put_service(web(docker_image, 1))
        await wait_for(store, lambda s: running(s) == [1])
        assert agent.task is not None and not agent.task.done()
        assert agent.agent.heartbeat.healthy


async def test_restart_keeps_and_adopts_containers(store: EtcdStore, etcd_endpoints: str, prefix: str,
                                                   docker_image: str, tmp_path: Path) -> None:
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=1,
                             release_on_exit=False, keep_containers=True):
        await VersionStore(store).put_service(web(docker_image, 2))
        before = await wait_for(store, lambda s: running(s) == [1, 2])
    ids = {n: before.instances[(WEB, n)].container_id for n in (1, 2)}
    assert sorted(docker_ids("n1")) == ["1", "2"]  # left running across the stop
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=1) as (agent,):
        after = await wait_for(
            store, lambda s: running(s) == [1, 2]
            and all(r.lease == agent.agent.heartbeat.lease for r in s.instances_of(WEB))
        )
        assert {n: after.instances[(WEB, n)].container_id for n in (1, 2)} == ids


async def test_crash_backoff_resets_after_a_healthy_run_on_real_containers(
    store: EtcdStore, etcd_endpoints: str, prefix: str, docker_image: str, tmp_path: Path
) -> None:
    """Real containers that exit on their own: one that crashes at once backs off (its failure
    count grows), one that runs longer than the healthy window before each exit restarts at once
    every time (its count stays 1; it used to grow to the cap too).  The policy's windows are
    scaled down for the test (stable after 1.5 s instead of 30 s)."""
    from daprdockr.core.backoff import Backoff
    from daprdockr.core.restart_policy import RestartPolicy
    from daprdockr.core.retry import RetryPolicy

    quick = ServiceName(group="crash", service="quick")
    steady = ServiceName(group="crash", service="steady")
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=1, node_prefix="cr") as agents:
        reconciler = agents[0].agent.reconciler
        reconciler.policy = RetryPolicy(crash=RestartPolicy(backoff=Backoff(base=0.3, max_delay=20.0),
                                                            stable_after=1.5, jitter=0.2))
        await VersionStore(store).put_service(ServiceSpec.from_dict({"image": docker_image, "instances": 1,
                                                       "cmd": ["sh", "-c", "exit 1"]}, name=quick))
        await VersionStore(store).put_service(ServiceSpec.from_dict({"image": docker_image, "instances": 1,
                                                       "cmd": ["sh", "-c", "sleep 2; exit 1"]}, name=steady))
        worst: dict[ServiceName, int] = {quick: 0, steady: 0}
        starts: dict[ServiceName, set[float]] = {quick: set(), steady: set()}  # the records' "running since"
        loop = asyncio.get_running_loop()
        end = loop.time() + 40  # (about 12 s here; a loaded host starts containers slower)
        while loop.time() < end and not (worst[quick] >= 3 and len(starts[steady]) >= 3):
            for name in (quick, steady):
                entry = reconciler.retries.get((name, 1))
                if entry is not None:
                    worst[name] = max(worst[name], entry.crashes)
            for name in (quick, steady):
                rec = reconciler.mirror.state().instances.get((name, 1))
                if rec is not None and rec.state == "running":
                    starts[name].add(rec.since)
            await asyncio.sleep(0.05)
        print(f"crash counts: quick {worst[quick]}, steady {worst[steady]}; starts: quick "
              f"{len(starts[quick])}, steady {len(starts[steady])}")
        assert worst[quick] >= 3, "a crash loop backs off"
        assert worst[steady] == 1 and len(starts[steady]) >= 3, "a container that ran healthy restarts at once"
