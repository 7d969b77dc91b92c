"""Chaos on a real cluster (bounded: about 2-3 minutes in all).

3 etcd members, 3 agent processes (DNS + nginx each), one service with an http_host.  For
``CHAOS_SECONDS`` three loops run together, driven by one seeded RNG (the seed is printed; set
``DAPRDOCKR_CHAOS_SEED`` to replay a run's choices), while HTTP load runs through two agents' nginx:

* churn: every 2-4 s the service is scaled to a random 2..9 instances;
* faults, every 1.5-3.5 s one of: SIGKILL an agent (restarted 1-6 s later; at most two down),
  ``docker kill`` a random instance container, SIGKILL an agent's nginx master (its pid file),
  stop an etcd member for 4-10 s (one etcd fault at a time);
* a script, once each: quorum loss (2 of 3 members stopped for 3 x TTL + 1 s, then restarted), a
  hung member (SIGSTOP for 4-8 s, then SIGCONT), a malformed spec written over the running
  service, a malformed value written over an agent's own instance key (on its lease).  The two
  garbage writes hold the other loops off, wait for a converged cluster, and check that no
  container is stopped or replaced in the 6 s after the write (then the good spec is restored).

Then every agent and member is running again, the final spec is written once more, and within
``CONVERGE_SECONDS`` every instance must be served again: etcd holds the spec unchanged, a node
record per live agent and instances 1..N running on their node's current lease, and the
container each record names runs.  Within ``REBALANCE_SECONDS`` more the cluster must agree with
itself exactly and be spread within one: instances 1..N run, each exactly once (``docker ps``,
no rebalancing move left in flight), on the node etcd names; and then every agent's DNS answers
each name with its owner's address and NXDOMAIN beyond N, and every agent's nginx routes to
exactly the N running containers.  The HTTP client that retries (on the
other nginx, for up to 10 s) saw no failed request; what a client without retries would have seen
is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState
from daprdockr.errors import DaprDockrError
from tests.e2e.probes import (
    IDENTITY_CMD,
    HttpLoad,
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
              pytest.mark.timeout(360)]
WEB = ServiceName(group="myapp", service="web")
HOST = "web.myapp.test"
CHAOS_SECONDS = float(os.environ.get("DAPRDOCKR_CHAOS_SECONDS", "60"))
CONVERGE_SECONDS = 20.0  # every instance served again, with the default 5 s lease TTL
# ... and then spread within one: rebalancing moves one instance at a time (start-first, each
# waiting for update.min_healthy and a cool-down), so a heal that left 9 instances on one node
# takes 6 moves after the cluster converged (seen: a move begun 19 s after healing)
REBALANCE_SECONDS = 40.0
TTL = 5
GARBAGE_WINDOW = 6.0  # seconds a garbage write is watched for stopped or replaced containers
SCRIPT = [(4.0, "lose_quorum"), (27.0, "hang_member"), (38.0, "garbage_spec"), (48.0, "garbage_instance")]
BAD_SPECS = [
    lambda good: json.dumps({**good, "replicas": 9}).encode(),  # an unknown field
    lambda good: json.dumps({**good, "instances": str(good["instances"])}).encode(),
    lambda good: json.dumps(good).encode()[:-9],  # truncated
    lambda good: json.dumps({**good, "ports": list(range(10000, 26000))}).encode(),  # too big
]


@dataclass
class Chaos:
    """The fault injector.  :meth:`fault_once` / :meth:`churn_once` are single steps."""

    cluster: RealCluster
    store: EtcdStore
    spec: ServiceSpec
    rng: random.Random
    log: list[str] = field(default_factory=list)
    restarts: dict[str, float] = field(default_factory=dict)  # agent or member -> restart at
    hung: dict[str, float] = field(default_factory=dict)  # SIGSTOPped member -> SIGCONT at
    agent_started: dict[str, float] = field(default_factory=dict)  # agent -> when it was last restarted
    writes_ok: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # garbage checks hold the other loops off
    garbage_problems: list[str] = field(default_factory=list)
    scripted: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {text}"
        self.log.append(line)
        print(line, flush=True)

    async def churn_once(self) -> None:
        async with self.lock:
            await self._churn()

    async def _churn(self) -> None:
        spec = replace(self.spec, instances=self.rng.randint(2, 9))
        try:
            await VersionStore(self.store).put_service(spec)
        except DaprDockrError as exc:  # an etcd member may be down or electing
            self.note(f"scale to {spec.instances} failed: {exc}")
            return
        self.spec = spec
        self.writes_ok += 1
        self.note(f"scaled to {spec.instances}")

    def restart_due(self, now: float, *, only_etcd: bool = False) -> None:
        for name, at in list(self.hung.items()):
            if at <= now:
                del self.hung[name]
                member = next(m for m in self.cluster.etcd.members if m.name == name)
                assert member.proc is not None
                os.kill(member.proc.pid, signal.SIGCONT)
                self.note(f"SIGCONT etcd member {name}")
        for name, at in list(self.restarts.items()):
            if only_etcd and name in self.cluster.agents:
                continue
            if at > now:
                continue
            del self.restarts[name]
            if name in self.cluster.agents:
                self.cluster.agents[name].start()
                self.agent_started[name] = time.monotonic()
            else:
                member = next(m for m in self.cluster.etcd.members if m.name == name)
                self.cluster.etcd.start_member(member, new=False)
            self.note(f"restarted {name}")

    async def fault_once(self) -> None:
        async with self.lock:
            self.restart_due(time.monotonic())
            fault = self.rng.choice(["kill_agent", "docker_kill", "kill_nginx", "stop_etcd"])
            await getattr(self, fault)()

    def etcd_busy(self) -> bool:
        return bool(self.hung) or any(name not in self.cluster.agents for name in self.restarts)

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
        if self.etcd_busy():
            return  # one etcd fault at a time
        member = self.rng.choice(self.cluster.etcd.members)
        self.cluster.etcd.stop_member(member)
        self.restarts[member.name] = time.monotonic() + self.rng.uniform(4, 10)
        self.note(f"stopped etcd member {member.name}")

    # ------------------------------------------------------------------ scripted faults
    async def lose_quorum(self) -> None:
        """2 of 3 members stopped for 3 x TTL + 1 s: no writes, no reads, no keepalives."""
        self.restart_due(float("inf"), only_etcd=True)
        victims = self.rng.sample(self.cluster.etcd.members, 2)
        for m in victims:
            self.cluster.etcd.stop_member(m)
            self.restarts[m.name] = time.monotonic() + 3 * TTL + 1
        self.note(f"quorum lost: stopped etcd members {', '.join(m.name for m in victims)} for {3 * TTL + 1}s")

    async def hang_member(self) -> None:
        """One member SIGSTOPped: connections stay open, nothing answers."""
        self.restart_due(float("inf"), only_etcd=True)
        member = self.rng.choice(self.cluster.etcd.members)
        assert member.proc is not None
        os.kill(member.proc.pid, signal.SIGSTOP)
        self.hung[member.name] = time.monotonic() + self.rng.uniform(4, 8)
        self.note(f"SIGSTOP etcd member {member.name}")

    async def _quiesce(self) -> bool:
        """Everything running again and converged, and spread within one of the fair share (so
        that nothing moves on its own: no rebalancing move is due)."""
        self.restart_due(float("inf"))
        # an agent restarted just now may not have registered yet, while its old lease still
        # holds its keys: garbage written on that lease would expire with it and move its
        # instances (seen once: restarted at :41, garbage at :42, registered at :43.6)
        young = max(self.agent_started.values(), default=0.0) + TTL + 1 - time.monotonic()
        if young > 0:
            await asyncio.sleep(young)
        await asyncio.to_thread(self.cluster.etcd.wait_healthy)
        for _ in range(20):
            try:
                await VersionStore(self.store).put_service(self.spec)
                break
            except DaprDockrError:
                await asyncio.sleep(0.5)
        served, verdict = await settle(self.store, self.cluster, self.spec, since=time.monotonic())
        if not served.served or verdict.problems or not balanced(verdict.state):
            self.garbage_problems.append(f"not converged before a garbage write: {verdict.problems or 'unbalanced'}")
            return False
        return True

    async def _watch_containers(self, what: str) -> None:
        before = await asyncio.to_thread(docker_containers, self.cluster.node_ids, service="web", group="myapp")
        await asyncio.sleep(GARBAGE_WINDOW)
        after = await asyncio.to_thread(docker_containers, self.cluster.node_ids, service="web", group="myapp")
        if before != after:
            self.garbage_problems.append(f"{what}: containers changed: {before} -> {after}")
        self.note(f"{what}: {len(after)} containers untouched for {GARBAGE_WINDOW:g}s"
                  if before == after else f"{what}: CONTAINERS CHANGED")

    async def garbage_spec(self) -> None:
        async with self.lock:
            if not await self._quiesce():
                return
            value = self.rng.choice(BAD_SPECS)(self.spec.to_dict())
            await self.store.put_raw(self.store.schema.service(WEB), value)
            self.note(f"wrote a malformed spec ({value[:60]!r}...)")
            await self._watch_containers("malformed spec")
            await VersionStore(self.store).put_service(self.spec)
            self.note("restored the spec")

    async def garbage_instance(self) -> None:
        async with self.lock:
            if not await self._quiesce():
                return
            state = await self.store.snapshot()
            rec = self.rng.choice(state.instances_of(WEB))
            key = self.store.schema.instance(WEB, rec.number)
            await self.store.put_raw(key, b'{"node": "' + rec.node.encode() + b'", "garbage', lease=rec.lease)
            self.note(f"wrote garbage over instance {rec.number} of {rec.node} (on its lease)")
            await self._watch_containers("malformed instance key")
            fixed = (await self.store.snapshot()).instances.get((WEB, rec.number))
            if fixed is None or fixed.container_id != rec.container_id or fixed.state != "running":
                self.garbage_problems.append(f"instance {rec.number} not repaired on its container: {fixed}")

    async def script(self, start: float) -> None:
        for at, step in SCRIPT:
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            if step.startswith("garbage"):
                await getattr(self, step)()
            else:
                async with self.lock:
                    await getattr(self, step)()
            self.scripted.append(step)

    async def run(self, seconds: float) -> None:
        start = time.monotonic()
        end = start + seconds

        async def churn() -> None:
            while time.monotonic() < end:
                await self.churn_once()
                await asyncio.sleep(self.rng.uniform(2, 4))

        async def faults() -> None:
            while time.monotonic() < end:
                await asyncio.sleep(self.rng.uniform(1.5, 3.5))
                await self.fault_once()

        await asyncio.gather(churn(), faults(), self.script(start))

    async def heal(self) -> None:
        """Restart everything still down, then write the final spec once more (until it sticks)."""
        self.restart_due(float("inf"))
        self.cluster.etcd.wait_healthy()
        for _ in range(20):
            try:
                await VersionStore(self.store).put_service(self.spec)
                break
            except DaprDockrError as exc:
                self.note(f"final write failed: {exc}")
                await asyncio.sleep(0.5)
        self.note(f"healed; final instances {self.spec.instances}")


@dataclass(frozen=True, slots=True)
class Verdict:
    """Where etcd and Docker disagree with the spec (empty lists mean converged); ``served``:
    etcd agrees with the spec and every instance's recorded container runs (a second container
    of an instance, a start-first move in flight, is a problem but leaves it served)."""

    problems: list[str]
    state: ClusterState
    served: bool = False


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
    # a key still on its node's previous lease (the agent restarted and has not adopted it yet)
    # goes when that lease expires: not converged
    old_lease = sorted(n for n, r in records.items() if r.node in state.nodes and r.lease != state.nodes[r.node].lease)
    if old_lease:
        problems.append(f"instances {old_lease} on an old lease of their node")
    containers = await asyncio.to_thread(docker_containers, cluster.node_ids, service="web", group="myapp")
    running = {(c.number, c.node, c.container_id) for c in containers}
    served = not problems and all((n, r.node, r.container_id) in running for n, r in records.items())
    if numbers_running(containers) != Counter(want):
        problems.append(f"docker runs {sorted(numbers_running(containers).items())}")
    elif {c.number: (c.node, c.container_id) for c in containers} != {
        n: (r.node, r.container_id) for n, r in records.items()
    }:
        problems.append("docker containers differ from the etcd records")
    return Verdict(problems, state, served=served)


async def settle(store: EtcdStore, cluster: RealCluster, spec: ServiceSpec, *, since: float) -> tuple[Verdict, Verdict]:
    """Wait for every instance served (within ``CONVERGE_SECONDS`` of ``since``, a monotonic
    time), then for etcd and Docker to agree exactly, spread within one (rebalancing done, within
    ``REBALANCE_SECONDS`` more).  Returns the two verdicts (each the last seen if not reached)."""
    served = await eventually(lambda: etcd_and_docker(store, cluster, spec), lambda v: v.served,
                              timeout=max(1.0, since + CONVERGE_SECONDS - time.monotonic()))
    if not served.served:
        return served, served
    settled = await eventually(
        lambda: etcd_and_docker(store, cluster, spec), lambda v: not v.problems and balanced(v.state),
        timeout=max(1.0, since + CONVERGE_SECONDS + REBALANCE_SECONDS - time.monotonic()),
    )
    return served, settled


def balanced(state: ClusterState) -> bool:
    """Every live node within one of every other in instances of the service."""
    counts = Counter({n: 0 for n in state.nodes}) + Counter(r.node for r in state.instances_of(WEB))
    per_node = [counts[n] for n in state.nodes]
    return not per_node or max(per_node) - min(per_node) <= 1


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


async def wait_routable(cluster: RealCluster, *, final_host: str) -> None:
    """Until the first two agents' nginx answer for the service (the load starts then)."""
    async with aiohttp.ClientSession() as session:
        for agent in list(cluster.agents.values())[:2]:
            got = await eventually(
                lambda a=agent: http_sample(session, ip=a.addr.ip, port=a.addr.http_port, host=final_host, count=4),
                lambda sample: sample.statuses[200] == 4, timeout=30)
            assert got.statuses[200] == 4, f"{agent.node_id} does not route {final_host}: {got.statuses}"


async def chaos_then_verify(cluster: RealCluster, *, prefix: str, image: str, seed: int) -> None:
    spec = ServiceSpec.from_dict(
        # (a short min_healthy: rebalancing moves, which wait for it, settle within the quiesce)
        {"image": image, "instances": 6, "http_host": HOST, "http_port": 8080, "cmd": IDENTITY_CMD,
         "update": {"min_healthy": "1s", "deadline": "30s"}},
        name=WEB,
    )
    async with EtcdStore(endpoints=parse_endpoints(cluster.endpoints), schema=KeySchema(prefix)) as store:
        await VersionStore(store).put_service(spec)
        chaos = Chaos(cluster=cluster, store=store, spec=spec, rng=random.Random(seed))
        await wait_routable(cluster, final_host=HOST)
        load = HttpLoad(targets=[(a.addr.ip, a.addr.http_port) for a in list(cluster.agents.values())[:2]], host=HOST)
        load_stop = asyncio.Event()
        load_task = asyncio.create_task(load.run(load_stop))
        await chaos.run(CHAOS_SECONDS)
        await chaos.heal()
        healed = time.monotonic()
        final = chaos.spec
        assert chaos.writes_ok >= CHAOS_SECONDS / 10, "the churn loop barely ran"

        # every instance served, then converged and spread within one (else a rebalancing move is
        # still due: seen once, a move started between this check and the one at the end)
        served, verdict = await settle(store, cluster, final, since=healed)
        assert served.served, f"seed {seed}: not every instance served after {CONVERGE_SECONDS:g}s: {served.problems}"
        took = time.monotonic() - healed
        assert not verdict.problems, f"seed {seed}: not converged after {took:.1f}s: {verdict.problems}"
        assert balanced(verdict.state), f"seed {seed}: not spread within one after {took:.1f}s"
        print(f"etcd + docker converged and spread {took:.1f}s after healing", flush=True)
        deadline = time.monotonic() + CONVERGE_SECONDS  # DNS and nginx follow the settled state

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
        load_stop.set()
        await load_task
        print(f"HTTP load through {len(load.targets)} nginx: {load.summary()}", flush=True)
        assert chaos.scripted == [step for _, step in SCRIPT], f"seed {seed}: script ran {chaos.scripted}"
        assert not chaos.garbage_problems, f"seed {seed}: {chaos.garbage_problems}"
        assert load.failed == 0, f"seed {seed}: {load.failed} requests failed even with retries: {load.failures}"
