"""Chaos on a real cluster (bounded: about 2 minutes in all).

3 etcd members, 3 agent processes (DNS + nginx each), one service with an http_host.  For
``CHAOS_SECONDS`` two loops run together, driven by one seeded RNG (the seed is printed; set
``DAPRDOCKR_CHAOS_SEED`` to replay a run's choices):

* churn: every 2-4 s the service is scaled to a random 2..9 instances;
* faults, every 1.5-3.5 s one of: SIGKILL an agent (restarted 1-6 s later; at most two down),
  ``docker kill`` a random instance container, SIGKILL an agent's nginx master (its pid file),
  stop an etcd member for 4-10 s (one at a time, so etcd keeps quorum).

Then every agent and member is running again, the final spec is written once more, and within
``CONVERGE_SECONDS`` the cluster must agree with itself: etcd holds the spec unchanged and a node
record per live agent; instances 1..N run, each exactly once (``docker ps``), on the node etcd
names; every agent's DNS answers each name with its owner's address and NXDOMAIN beyond N; every
agent's nginx routes to exactly the N running containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState
from daprdockr.errors import DaprDockrError
from tests.e2e.probes import (
    IDENTITY_CMD,
    dig_until,
    docker_containers,
    eventually,
    has_records,
    numbers_running,
    routed_identities,
)
from tests.e2e.realcluster import RealCluster, real_cluster

pytestmark = [pytest.mark.slow, pytest.mark.etcd, pytest.mark.docker, pytest.mark.nginx,
              pytest.mark.timeout(240)]
WEB = ServiceName(group="myapp", service="web")
HOST = "web.myapp.test"
CHAOS_SECONDS = float(os.environ.get("DAPRDOCKR_CHAOS_SECONDS", "60"))
CONVERGE_SECONDS = 20.0  # with the default 5 s lease TTL


@dataclass
class Chaos:
    """The fault injector.  :meth:`fault_once` / :meth:`churn_once` are single steps."""

    cluster: RealCluster
    store: EtcdStore
    spec: ServiceSpec
    rng: random.Random
    log: list[str] = field(default_factory=list)
    restarts: dict[str, float] = field(default_factory=dict)  # agent or member -> restart at
    writes_ok: int = 0

    def note(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {text}"
        self.log.append(line)
        print(line, flush=True)

    async def churn_once(self) -> None:
        spec = replace(self.spec, instances=self.rng.randint(2, 9))
        try:
            await self.store.put_service(spec)
        except DaprDockrError as exc:  # an etcd member may be down or electing
            self.note(f"scale to {spec.instances} failed: {exc}")
            return
        self.spec = spec
        self.writes_ok += 1
        self.note(f"scaled to {spec.instances}")

    def restart_due(self, now: float) -> None:
        for name, at in list(self.restarts.items()):
            if at > now:
                continue
            del self.restarts[name]
            if name in self.cluster.agents:
                self.cluster.agents[name].start()
            else:
                member = next(m for m in self.cluster.etcd.members if m.name == name)
                self.cluster.etcd.start_member(member, new=False)
            self.note(f"restarted {name}")

    async def fault_once(self) -> None:
        self.restart_due(time.monotonic())
        fault = self.rng.choice(["kill_agent", "docker_kill", "kill_nginx", "stop_etcd"])
        await getattr(self, fault)()

    async def kill_agent(self) -> None:
        alive = sorted(n for n, a in self.cluster.agents.items() if a.alive)
        if len(alive) <= 1:
            return
        victim = self.rng.choice(alive)
        self.cluster.agents[victim].kill()
        self.restarts[victim] = time.monotonic() + self.rng.uniform(1, 6)
        self.note(f"SIGKILL agent {victim}")

    async def docker_kill(self) -> None:
        containers = docker_containers(self.cluster.node_ids, service="web", group="myapp")
        if not containers:
            return
        victim = self.rng.choice(containers)
        subprocess.run(["docker", "kill", victim.container_id], capture_output=True)
        self.note(f"docker kill instance {victim.number} on {victim.node}")

    async def kill_nginx(self) -> None:
        agent = self.cluster.agents[self.rng.choice(self.cluster.node_ids)]
        pid = agent.nginx_master_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self.note(f"SIGKILL nginx master {pid} of {agent.node_id}")

    async def stop_etcd(self) -> None:
        if any(name not in self.cluster.agents for name in self.restarts):
            return  # one member down at a time
        member = self.rng.choice(self.cluster.etcd.members)
        self.cluster.etcd.stop_member(member)
        self.restarts[member.name] = time.monotonic() + self.rng.uniform(4, 10)
        self.note(f"stopped etcd member {member.name}")

    async def run(self, seconds: float) -> None:
        end = time.monotonic() + seconds

        async def churn() -> None:
            while time.monotonic() < end:
                await self.churn_once()
                await asyncio.sleep(self.rng.uniform(2, 4))

        async def faults() -> None:
            while time.monotonic() < end:
                await asyncio.sleep(self.rng.uniform(1.5, 3.5))
                await self.fault_once()

        await asyncio.gather(churn(), faults())

    async def heal(self) -> None:
        """Restart everything still down, then write the final spec once more (until it sticks)."""
        self.restart_due(float("inf"))
        self.cluster.etcd.wait_healthy()
        for _ in range(20):
            try:
                await self.store.put_service(self.spec)
                break
            except DaprDockrError as exc:
                self.note(f"final write failed: {exc}")
                await asyncio.sleep(0.5)
        self.note(f"healed; final instances {self.spec.instances}")


@dataclass(frozen=True, slots=True)
class Verdict:
    """Where etcd and Docker disagree with the spec (empty lists mean converged)."""

    problems: list[str]
    state: ClusterState


async def etcd_and_docker(store: EtcdStore, cluster: RealCluster, spec: ServiceSpec) -> Verdict:
    problems: list[str] = []
    try:
        state = await store.snapshot()
    except DaprDockrError as exc:
        return Verdict([f"etcd: {exc}"], ClusterState())
    if state.services.get(WEB) != spec:
        problems.append(f"spec changed: {state.services.get(WEB)}")
    live = {n for n, a in cluster.agents.items() if a.alive}
    if set(state.nodes) != live:
        problems.append(f"node records {sorted(state.nodes)} != live agents {sorted(live)}")
    records = {r.number: r for r in state.instances_of(WEB)}
    want = set(range(1, spec.instances + 1))
    if set(records) != want or any(r.state != "running" for r in records.values()):
        problems.append(f"etcd instances {sorted((n, r.state) for n, r in records.items())}")
    containers = await asyncio.to_thread(docker_containers, cluster.node_ids, service="web", group="myapp")
    if numbers_running(containers) != Counter(want):
        problems.append(f"docker runs {sorted(numbers_running(containers).items())}")
    elif {c.number: (c.node, c.container_id) for c in containers} != {
        n: (r.node, r.container_id) for n, r in records.items()
    }:
        problems.append("docker containers differ from the etcd records")
    return Verdict(problems, state)


@pytest.fixture
async def cluster(prefix: str, docker_image: str) -> AsyncIterator[RealCluster]:
    # a private dir, not tmp_path: concurrent pytest sessions rotate away each other's old
    # basetemps, which must not delete etcd data dirs under a running chaos test
    workdir = Path(tempfile.mkdtemp(prefix="daprdockr-chaos-"))
    with real_cluster(workdir, prefix=prefix, node_prefix="c") as c:
        await asyncio.sleep(1.5)
        yield c
    if not c.keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)


async def test_cluster_converges_after_chaos(cluster: RealCluster, prefix: str, docker_image: str) -> None:
    seed = int(os.environ.get("DAPRDOCKR_CHAOS_SEED") or time.time_ns() % 2**32)
    print(f"chaos seed {seed} (replay with DAPRDOCKR_CHAOS_SEED={seed})", flush=True)
    try:
        await chaos_then_verify(cluster, prefix=prefix, image=docker_image, seed=seed)
    except BaseException:
        cluster.keep_workdir = True
        cluster.dump_logs(60)
        print(f"logs and data kept in {cluster.workdir}", flush=True)
        raise


async def chaos_then_verify(cluster: RealCluster, *, prefix: str, image: str, seed: int) -> None:
    spec = ServiceSpec.from_dict(
        {"image": image, "instances": 6, "http_host": HOST, "http_port": 8080, "cmd": IDENTITY_CMD},
        name=WEB,
    )
    async with EtcdStore(endpoints=parse_endpoints(cluster.endpoints), schema=KeySchema(prefix)) as store:
        await store.put_service(spec)
        chaos = Chaos(cluster=cluster, store=store, spec=spec, rng=random.Random(seed))
        await chaos.run(CHAOS_SECONDS)
        await chaos.heal()
        healed = time.monotonic()
        deadline = healed + CONVERGE_SECONDS
        final = chaos.spec
        assert chaos.writes_ok >= CHAOS_SECONDS / 5, "the churn loop barely ran"

        verdict = await eventually(
            lambda: etcd_and_docker(store, cluster, final), lambda v: not v.problems, timeout=CONVERGE_SECONDS
        )
        took = time.monotonic() - healed
        assert not verdict.problems, f"seed {seed}: not converged after {took:.1f}s: {verdict.problems}"
        print(f"etcd + docker converged {took:.1f}s after healing", flush=True)

        records = {r.number: r for r in verdict.state.instances_of(WEB)}
        for agent in cluster.agents.values():
            a = agent.addr
            for n, rec in records.items():
                left = max(1.0, deadline - time.monotonic())
                answer = await dig_until(
                    a.ip, a.dns_port, f"{n}.web.myapp.container", has_records(rec.address), timeout=left
                )
                assert answer.records == (rec.address,), f"seed {seed}: DNS {agent.node_id} {n}: {answer}"
            beyond = await dig_until(
                a.ip, a.dns_port, f"{final.instances + 1}.web.myapp.container",
                lambda r: r.status == "NXDOMAIN", timeout=max(1.0, deadline - time.monotonic()),
            )
            assert beyond.status == "NXDOMAIN", f"seed {seed}: {agent.node_id}: {beyond}"

        want = {f"{n} {r.node}" for n, r in records.items()}
        async with aiohttp.ClientSession() as session:
            for agent in cluster.agents.values():
                a = agent.addr
                got = await routed_identities(
                    session, ip=a.ip, port=a.http_port, host=HOST, want=want,
                    timeout=max(2.0, deadline - time.monotonic()),
                )
                assert got == want, f"seed {seed}: nginx {agent.node_id}: {sorted(got)} != {sorted(want)}"
        print(f"DNS and nginx agree {time.monotonic() - healed:.1f}s after healing", flush=True)
        # nothing moved while we looked: the state is stable, not just passing through
        again = await etcd_and_docker(store, cluster, final)
        assert not again.problems, f"seed {seed}: {again.problems}"
