"""Agents under etcd faults, on real etcd members, a real Docker engine and real DNS.

* quorum loss (2 of 3 members stopped, or hung with SIGSTOP) for longer than the lease TTL: every
  root task keeps running, and once etcd has quorum again the node record and every instance key
  are back within TTL + 2 s, on the same containers;
* a release etcd cannot confirm never stops the container (release before stop);
* the agent's own DNS drops an instance whose container it knows is down, even while etcd (and so
  its mirror) is stale.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.records import InstanceRecord
from daprdockr.errors import ContainerError, StoreUnavailableError
from tests.agent.cluster import LocalAgent, local_cluster, wait_for
from tests.agent.test_agent_docker import WEB, docker_ids, running, web
from tests.support.procs import EtcdCluster, EtcdMember, free_port

pytestmark = [pytest.mark.etcd, pytest.mark.docker, pytest.mark.slow]
TTL = 2  # local_cluster's agents run with a 2 s lease


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path / "etcd", size=3)
    (tmp_path / "etcd").mkdir()
    cluster.start()
    try:
        yield cluster
    finally:
        for m in cluster.members:  # a SIGSTOPped member must run again to be terminated
            if m.proc is not None and m.proc.poll() is None:
                os.kill(m.proc.pid, signal.SIGCONT)
        cluster.stop()


@pytest.fixture
async def store3(etcd3: EtcdCluster, prefix: str) -> AsyncIterator[EtcdStore]:
    async with EtcdStore(endpoints=parse_endpoints(etcd3.endpoints), schema=KeySchema(prefix)) as s:
        yield s


def _lose(cluster: EtcdCluster, victims: list[EtcdMember], how: str) -> None:
    for m in victims:
        if how == "stop":
            cluster.stop_member(m)
        else:
            assert m.proc is not None
            os.kill(m.proc.pid, signal.SIGSTOP)


def _restore(cluster: EtcdCluster, victims: list[EtcdMember], how: str) -> None:
    for m in victims:
        if how == "stop":
            cluster.start_member(m, new=False)
        else:
            assert m.proc is not None
            os.kill(m.proc.pid, signal.SIGCONT)


@pytest.mark.parametrize("how", ["stop", "sigstop"])
async def test_quorum_loss_agent_recovers_on_same_containers(
    etcd3: EtcdCluster, store3: EtcdStore, prefix: str, docker_image: str, tmp_path: Path, how: str
) -> None:
    async with local_cluster(etcd=etcd3.endpoints, prefix=prefix, tmp=tmp_path, nodes=1, node_prefix="q") as agents:
        agent = agents[0].agent
        await VersionStore(store3).put_service(web(docker_image, 2))
        state = await wait_for(store3, lambda s: running(s) == [1, 2])
        before = {r.number: r.container_id for r in state.instances_of(WEB)}

        victims = etcd3.members[:2]
        _lose(etcd3, victims, how)
        try:
            await asyncio.sleep(3 * TTL + 1)
            assert docker_ids("q1") == {str(n): [cid[:12]] for n, cid in before.items()}, "containers kept running"
        finally:
            _restore(etcd3, victims, how)
        await asyncio.to_thread(etcd3.wait_healthy)
        back = time.monotonic()

        def recovered(s: object) -> bool:
            from daprdockr.core.state import ClusterState

            assert isinstance(s, ClusterState)
            recs = {r.number: r for r in s.instances_of(WEB)}
            return "q1" in s.nodes and running(s) == [1, 2] and all(
                r.lease == s.nodes["q1"].lease for r in recs.values())

        state = await wait_for(store3, recovered, timeout=TTL + 2)
        took = time.monotonic() - back
        print(f"recovered {took:.2f}s after quorum came back ({how})")
        assert {r.number: r.container_id for r in state.instances_of(WEB)} == before, "containers were restarted"
        assert all(v == "running" for v in agent.tasks.state.values()), agent.tasks.state
        assert sorted(agent.tasks.state) == sorted(
            ["heartbeat", "etcd-watch", "docker-events", "reconcile", "fanout", "settle", "applied", "health",
             "reaper", "etcd-housekeeping"])
        # the watch is live again: a new change reaches the agent
        await VersionStore(store3).put_service(web(docker_image, 3))
        await wait_for(store3, lambda s: running(s) == [1, 2, 3], timeout=10)
        assert {n: ids for n, ids in docker_ids("q1").items()} == {
            "1": [before[1][:12]], "2": [before[2][:12]], "3": docker_ids("q1")["3"]}


async def test_release_that_etcd_cannot_confirm_keeps_the_container(
    store: EtcdStore, etcd_endpoints: str, prefix: str, docker_image: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scale-down 3 -> 1 while etcd cannot confirm the release (the agent's release call fails):
    the containers keep running and nginx, which still routes to them, answers every request;
    once etcd works again they leave, still without a failed request (it used to stop them first:
    17 % of requests through nginx got 502 for as long as etcd was down)."""
    ip = "127.0.0.11"
    http_port = free_port(ip)
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=1, node_prefix="r",
                             per_node=lambda i, _ip: {"http_listen": (ip, http_port)}) as agents:
        await VersionStore(store).put_service(web(docker_image, 3, http_host="web.example.com"))
        await wait_for(store, lambda s: running(s) == [1, 2, 3])
        ids = docker_ids("r1")
        stop = asyncio.Event()
        statuses: Counter[str] = Counter()

        async def load() -> None:
            async with aiohttp.ClientSession() as http:
                while not stop.is_set():
                    try:
                        async with http.get(f"http://{ip}:{http_port}/", headers={"Host": "web.example.com"},
                                            timeout=aiohttp.ClientTimeout(total=3)) as r:
                            await r.read()
                            statuses[str(r.status)] += 1
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        statuses[type(exc).__name__] += 1

        async def unreachable(rec: InstanceRecord) -> bool:
            raise StoreUnavailableError("etcd unreachable (injected)")

        loader = asyncio.create_task(load())
        try:
            await asyncio.sleep(0.5)
            monkeypatch.setattr(agents[0].agent.store, "release_instance", unreachable)
            await VersionStore(store).put_service(web(docker_image, 1, http_host="web.example.com"))
            await asyncio.sleep(3)
            assert docker_ids("r1") == ids, "a container was stopped before etcd confirmed its release"
            monkeypatch.undo()
            await wait_for(store, lambda s: [r.number for r in s.instances_of(WEB)] == [1], timeout=15)
            deadline = time.monotonic() + 10
            while sorted(docker_ids("r1")) != ["1"] and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert docker_ids("r1") == {"1": ids["1"]}
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            await loader
        print(f"requests through nginx: {dict(statuses)}")
        assert set(statuses) == {"200"} and statuses["200"] > 50, dict(statuses)


async def _a_records(ip: str, port: int, name: str) -> tuple[str, list[str]]:
    r = await dns.asyncquery.udp(dns.message.make_query(name, "A"), ip, port=port, timeout=2)
    return dns.rcode.to_text(r.rcode()), [rd.address for rrset in r.answer for rd in rrset]


async def test_own_dns_drops_a_dead_instance_while_etcd_is_down(
    tmp_path: Path, prefix: str, docker_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etcd").mkdir()
    etcd = EtcdCluster(tmp_path / "etcd", size=1)
    etcd.start()
    ip = "127.0.0.11"  # local_cluster's first node
    dns_port = free_port(ip)
    try:
        async with EtcdStore(endpoints=parse_endpoints(etcd.endpoints), schema=KeySchema(prefix)) as store, \
                local_cluster(etcd=etcd.endpoints, prefix=prefix, tmp=tmp_path, nodes=1, node_prefix="l",
                              per_node=lambda i, _ip: {"dns_listen": (ip, dns_port),
                                                       "dns_upstreams": (("127.0.0.1", 9),),
                                                       "http_listen": (ip, free_port(ip))}) as agents:
            local: LocalAgent = agents[0]
            nginx = local.agent.nginx
            assert nginx is not None
            await VersionStore(store).put_service(web(docker_image, 2, http_host="web.example.com"))
            state = await wait_for(store, lambda s: running(s) == [1, 2])
            assert await _a_records(ip, dns_port, "2.web.myapp.container") == ("NOERROR", [ip])
            peer2 = f"{ip}:{state.instances[(WEB, 2)].port_for(8080)}"
            deadline = time.monotonic() + 10
            while peer2 not in nginx.table.get("web.example.com", ()) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert peer2 in nginx.table["web.example.com"]

            etcd.stop()  # the agent's mirror can no longer learn anything

            async def cannot_start(**kw: object) -> object:
                raise ContainerError("start refused (injected)", transient=True)

            monkeypatch.setattr(local.agent.runtime, "start_instance", cannot_start)
            victim = next(r for r in state.instances_of(WEB) if r.number == 2)
            subprocess.run(["docker", "kill", victim.container_id], check=True, capture_output=True)
            deadline = time.monotonic() + 10
            answer = await _a_records(ip, dns_port, "2.web.myapp.container")
            while answer[1] and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                answer = await _a_records(ip, dns_port, "2.web.myapp.container")
            assert not answer[1], f"the agent still answers for its dead instance 2: {answer}"
            assert await _a_records(ip, dns_port, "1.web.myapp.container") == ("NOERROR", [ip])
            # and its own nginx no longer routes to it (the table nginx confirmed: pushed after DNS)
            deadline = time.monotonic() + 10
            while peer2 in nginx.table.get("web.example.com", ()) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert peer2 not in nginx.table["web.example.com"], nginx.table
            assert len(nginx.table["web.example.com"]) == 1
            etcd.start()
    finally:
        etcd.stop()


async def test_shutdown_that_etcd_cannot_confirm_leaves_the_containers_running(
    tmp_path: Path, prefix: str, docker_image: str
) -> None:
    """Release before stop, at shutdown too: when the lease cannot be revoked (etcd down), every
    other router may still send requests to this node's instances, so they keep running (the next
    start adopts them).  It used to stop them anyway."""
    (tmp_path / "etcd").mkdir()
    etcd = EtcdCluster(tmp_path / "etcd", size=1)
    etcd.start()
    try:
        async with EtcdStore(endpoints=parse_endpoints(etcd.endpoints), schema=KeySchema(prefix)) as store, \
                local_cluster(etcd=etcd.endpoints, prefix=prefix, tmp=tmp_path, nodes=1, node_prefix="u") as agents:
            await VersionStore(store).put_service(web(docker_image, 2))
            await wait_for(store, lambda s: running(s) == [1, 2])
            ids = docker_ids("u1")
            etcd.stop()
            await agents[0].shutdown()
            assert docker_ids("u1") == ids, "containers were stopped although etcd never confirmed their release"
    finally:
        etcd.stop()


async def test_an_agent_whose_lease_expired_comes_back_on_the_same_containers(
    store: EtcdStore, etcd_endpoints: str, prefix: str, docker_image: str, tmp_path: Path
) -> None:
    """An agent cut off for longer than its TTL (its process frozen with SIGSTOP: etcd expires
    the lease, its node record and instance keys vanish): once it runs again it has a new lease,
    its node record and its instance keys back within TTL + 2 s, on the same containers."""
    from tests.agent.cluster import remove_node_containers, spawn_agent

    proc = spawn_agent(etcd=etcd_endpoints, prefix=prefix, node="x1", ip="127.0.0.11", state_dir=tmp_path)
    try:
        await wait_for(store, lambda s: "x1" in s.nodes, timeout=20)
        await VersionStore(store).put_service(web(docker_image, 2))
        state = await wait_for(store, lambda s: running(s) == [1, 2])
        before = {r.number: r.container_id for r in state.instances_of(WEB)}
        old_lease = state.nodes["x1"].lease
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            await wait_for(store, lambda s: "x1" not in s.nodes and not s.instances, timeout=TTL + 5)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        resumed = time.monotonic()

        def back(s: object) -> bool:
            from daprdockr.core.state import ClusterState

            assert isinstance(s, ClusterState)
            node = s.nodes.get("x1")
            return node is not None and node.lease != old_lease and running(s) == [1, 2] and all(
                r.lease == node.lease for r in s.instances_of(WEB))

        state = await wait_for(store, back, timeout=TTL + 2)
        print(f"back {time.monotonic() - resumed:.2f}s after the agent ran again")
        assert {r.number: r.container_id for r in state.instances_of(WEB)} == before, "containers were replaced"
        assert docker_ids("x1") == {str(n): [cid[:12]] for n, cid in before.items()}
    finally:
        proc.kill()
        proc.wait()
        remove_node_containers(["x1"])


async def test_a_lease_lost_before_the_heartbeat_sees_it_never_ends_the_applied_task(
    etcd3: EtcdCluster, store3: EtcdStore, prefix: str, docker_image: str, tmp_path: Path
) -> None:
    """Finding (CI, the quorum-loss test): when the lease expired, the watch delivered the
    deletion of the node's instance keys before its heartbeat noticed; the agent published its
    applied revision on the dead lease, and the ``applied`` task crashed (LeaseLostError) and
    showed ``restarting``.  Now it retries, and writes ``applied/<node>`` again on the new lease."""
    async with local_cluster(etcd=etcd3.endpoints, prefix=prefix, tmp=tmp_path, nodes=1, node_prefix="p") as agents:
        agent = agents[0].agent
        await VersionStore(store3).put_service(web(docker_image, 2))
        await wait_for(store3, lambda s: running(s) == [1, 2])
        old = agent.heartbeat.lease
        assert old
        await store3.revoke_lease(old)  # what an expiry does: every key on the lease goes at once
        state = await wait_for(store3, lambda s: "p1" in s.nodes and s.nodes["p1"].lease != old
                               and running(s) == [1, 2] and s.applied.get("p1", 0) > 0, timeout=TTL + 3)
        assert all(v == "running" for v in agent.tasks.state.values()), agent.tasks.state
        assert agent.tasks.restarts == {}, agent.tasks.restarts  # no root task ever ended
        assert state.applied["p1"] >= agent.acks.applied_revision() > 0
