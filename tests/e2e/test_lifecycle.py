"""Health checks, rolling updates, rollback, history and drain on a real cluster: 3 etcd members,
3 agent processes (nginx with the Lua balancer, DNS), real containers, real ``wrk`` load.

* a failing check takes the instance out of DNS and nginx; a passing one brings it back;
* an update that never gets healthy rolls back by itself while the old version answers every
  request (wrk: no socket error, no non-2xx);
* a good update of 6 instances never has more than ``parallel`` replacements in flight (replayed
  from etcd's history) and never serves fewer instances than it must, for both orders, under load;
* an agent SIGKILLed mid-rollout does not stall it: the others finish it;
* ``node drain`` moves every instance under load without a failed request, ``undrain`` lets the
  node claim again, and ``--drain-on-shutdown`` drains before the agent exits;
* ``svc history`` and ``svc rollback`` round-trip.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from daprdockr.core.state import ClusterState
from tests.e2e.probes import dig, dig_until, docker_containers, http_sample
from tests.e2e.realcluster import RealCluster

pytestmark = [pytest.mark.slow, pytest.mark.etcd, pytest.mark.docker, pytest.mark.nginx, pytest.mark.timeout(300)]

SERVE = "echo $DAPRDOCKR_INSTANCE $DAPRDOCKR_NODE $V > /www/id; {health}exec httpd -f -p 8080 -h /www"
HEALTHY_CMD = ["sh", "-c", SERVE.format(health="touch /www/healthz; ")]
NEVER_HEALTHY_CMD = ["sh", "-c", SERVE.format(health="")]  # serves /id, but /healthz is a 404
INTERVAL = 0.5
HEALTH = {"http": "/healthz", "port": 8080, "interval": f"{INTERVAL}s", "retries": 2, "timeout": "1s"}


def spec(name: ServiceName, image: str, n: int, *, version: str = "1", cmd: list[str] = HEALTHY_CMD,
         update: dict[str, Any] | None = None) -> ServiceSpec:
    return ServiceSpec.from_dict({
        "image": image, "instances": n, "http_host": host(name), "http_port": 8080, "cmd": cmd,
        "env": {"V": version}, "health": HEALTH,
        "update": update or {"parallel": 1, "min_healthy": "1s", "deadline": "8s"},
    }, name=name)


def host(name: ServiceName) -> str:
    return f"{name.service}.{name.group}.test"


@pytest.fixture
async def cluster(prefix: str, docker_image: str) -> AsyncIterator[tuple[RealCluster, EtcdStore]]:
    workdir = Path(tempfile.mkdtemp(prefix="daprdockr-lc-"))
    c = RealCluster(workdir, prefix=prefix, node_prefix="l")
    c.agents["l3"].extra_args = ["--drain-on-shutdown", "--drain-deadline", "60"]
    try:
        c.start()
        c.wait_registered()
        async with EtcdStore(endpoints=parse_endpoints(c.endpoints), schema=KeySchema(prefix)) as store:
            await asyncio.sleep(1.0)
            yield c, store
    except BaseException:
        c.dump_logs(60)
        raise
    finally:
        c.stop()
    shutil.rmtree(workdir, ignore_errors=True)


async def until(store: EtcdStore, ok: Callable[[ClusterState], bool], *, timeout: float, what: str) -> ClusterState:
    deadline = time.monotonic() + timeout
    while True:
        state = await store.snapshot()
        if ok(state):
            return state
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def serving(name: ServiceName, spec_hash: str, n: int) -> Callable[[ClusterState], bool]:
    """Every one of the ``n`` instances runs ``spec_hash`` and is routable."""
    def ok(state: ClusterState) -> bool:
        recs = [r for r in state.instances_of(name) if r.number <= n]
        return len(recs) == n and all(r.routable and r.spec_hash == spec_hash for r in recs)
    return ok


@dataclass
class WrkResult:
    requests: int
    errors: str
    outputs: list[str]


class Load:
    """``wrk`` keep-alive load through every agent's nginx at once, for a fixed time."""

    def __init__(self, c: RealCluster, name: ServiceName, seconds: int, *, skip: str = "") -> None:
        self.procs = [
            subprocess.Popen(["wrk", "-t1", "-c6", f"-d{seconds}s", "--timeout", "10s", "-H", f"Host: {host(name)}",
                              f"http://{a.addr.ip}:{a.addr.http_port}/id"], stdout=subprocess.PIPE, text=True)
            for a in c.agents.values() if a.alive and a.node_id != skip
        ]

    async def result(self) -> WrkResult:
        outs = [await asyncio.to_thread(p.communicate) for p in self.procs]
        texts = [o for o, _ in outs]
        requests = sum(int(m.group(1)) for t in texts if (m := re.search(r"(\d+) requests in", t)))
        errors = "\n".join(line for t in texts for line in t.splitlines()
                           if "Socket errors" in line or "Non-2xx" in line)
        return WrkResult(requests=requests, errors=errors, outputs=texts)


async def three_healthy_under_load(
    c: RealCluster, store: EtcdStore, name: ServiceName, image: str, order: str
) -> tuple[ServiceSpec, ClusterState, Load]:
    """Three healthy instances of ``name`` (update policy: ``parallel`` 1, ``order``, healthy 1 s
    within 8 s), routed by every nginx, and 20 s of load through all of them starting now."""
    policy = {"parallel": 1, "order": order, "min_healthy": "1s", "deadline": "8s"}
    good = spec(name, image, 3, update=policy)
    await VersionStore(store).put_service(good)
    await until(store, serving(name, good.runtime_hash, 3), timeout=60, what="3 healthy")
    await asyncio.sleep(1.5)  # every nginx has the routes
    start = await store.snapshot()
    return good, start, Load(c, name, 20)


@dataclass
class Timeline:
    max_slots: int = 0
    min_routable: int = 1 << 30
    new_containers: frozenset[str] = frozenset()
    dip: str = ""  # the records at the fewest routable, for the failure message


async def replay(store: EtcdStore, name: ServiceName, *, start: ClusterState, end: int, target: str,
                 n: int) -> Timeline:
    """Replay etcd's history from ``start`` to revision ``end``: the most replacement slots of
    ``name`` held at once, the fewest routable instances, the containers that served ``target``."""
    records: dict[int, InstanceRecord] = {r.number: r for r in start.instances_of(name)}
    slots: set[str] = {f"{i}" for i in start.slots.get(name, {})}
    slot_prefix = store.schema.slot(name, 1).rsplit("/", 1)[0] + "/"
    t = Timeline(max_slots=len(slots), min_routable=sum(r.routable for r in records.values() if r.number <= n))
    fresh: set[str] = set()
    if start.revision >= end:
        return t

    async def follow() -> None:
        async for ev in store.watch(start_revision=start.revision + 1):
            parsed = store.schema.parse(ev.key)
            if ev.key.startswith(slot_prefix):
                (slots.add if ev.kind == "put" else slots.discard)(ev.key)
                t.max_slots = max(t.max_slots, len(slots))
            elif parsed is not None and parsed.kind == "instance" and parsed.service == name:
                assert parsed.number is not None
                if ev.kind == "delete":
                    records.pop(parsed.number, None)
                else:
                    rec = InstanceRecord.from_dict(json.loads(ev.value), service=name, number=parsed.number)
                    records[parsed.number] = rec
                    if rec.routable and rec.spec_hash == target:
                        fresh.add(rec.container_id)
            routable = sum(r.routable for r in records.values() if r.number <= n)
            if ev.kind != "resync" and routable < t.min_routable:
                t.min_routable = routable
                t.dip = f"revision {ev.revision}: " + "; ".join(
                    f"{r.number} {r.node} {r.state} {r.health} {r.spec_hash[:6]}" for r in sorted(
                        records.values(), key=lambda r: r.number))
            if ev.revision >= end:
                return

    await asyncio.wait_for(follow(), 30)
    t.new_containers = frozenset(fresh)
    return t


# ------------------------------------------------------------------------------------------- tests
async def test_a_failing_check_takes_the_instance_out_of_dns_and_nginx_and_a_passing_one_brings_it_back(
    cluster: tuple[RealCluster, EtcdStore], docker_image: str
) -> None:
    c, store = cluster
    name = ServiceName(group="lc", service="hc")
    await VersionStore(store).put_service(spec(name, docker_image, 2))
    await until(store, serving(name, spec(name, docker_image, 2).runtime_hash, 2), timeout=60, what="2 healthy")
    a = c.agents["l1"].addr
    fqdn = f"1.{name.service}.{name.group}.container"
    assert (await dig_until(a.ip, a.dns_port, fqdn, lambda d: bool(d.records))).records

    (one,) = [x for x in docker_containers(c.node_ids, service=name.service, group=name.group) if x.number == 1]
    subprocess.run(["docker", "exec", one.container_id, "sh", "-c", "rm /www/healthz"], check=True)
    # out of DNS on every agent, and out of every nginx
    for agent in c.agents.values():
        d = await dig_until(agent.addr.ip, agent.addr.dns_port, fqdn, lambda d: not d.records, timeout=10)
        # (NODATA, not NXDOMAIN: the spec still promises instance 1, which is only unhealthy)
        assert d.status == "NOERROR" and not d.records, f"{agent.node_id} still answers {d}"
    async with aiohttp.ClientSession() as session:
        for agent in c.agents.values():
            sample = await http_sample(session, ip=agent.addr.ip, port=agent.addr.http_port, host=host(name),
                                       count=40)
            assert sample.numbers == {2}, f"{agent.node_id} routed to {sample.identities} ({sample.statuses})"
            assert set(sample.statuses) == {200}

    # the operator's views say why: ps and svc status show the health
    ps = json.loads(c.cli("ps", str(name), "--json").stdout)
    assert {r["instance"]: r["health"] for r in ps} == {1: "unhealthy", 2: "healthy"}, ps
    assert re.search(r"\b1\s+\S+\s+\S+\s+\S+\s+running\s+unhealthy\b", c.cli("ps", str(name)).stdout)
    status = json.loads(c.cli("svc", "status", str(name), "--json").stdout)
    assert (status["desired"], status["updated"], status["healthy"]) == (2, 2, 1), status
    assert [(i["instance"], i["health"]) for i in status["instances"]] == [(1, "unhealthy"), (2, "healthy")]
    assert "unhealthy" in c.cli("svc", "status", str(name)).stdout

    t0 = time.monotonic()
    subprocess.run(["docker", "exec", one.container_id, "sh", "-c", "touch /www/healthz"], check=True)
    async with aiohttp.ClientSession() as session:
        async def dns_back(agent: Any) -> float:
            await dig_until(agent.addr.ip, agent.addr.dns_port, fqdn, lambda d: bool(d.records), timeout=10)
            return time.monotonic() - t0

        async def nginx_back(agent: Any) -> float:
            while time.monotonic() - t0 < 10:
                sample = await http_sample(session, ip=agent.addr.ip, port=agent.addr.http_port, host=host(name),
                                           count=4)
                if 1 in sample.numbers:
                    return time.monotonic() - t0
                await asyncio.sleep(0.02)
            return float("inf")

        agents = list(c.agents.values())
        times = await asyncio.gather(*(dns_back(x) for x in agents), *(nginx_back(x) for x in agents))
    dns, nginx = max(times[:len(agents)]), max(times[len(agents):])
    print(f"instance 1 back on every agent {dns:.2f}s (DNS) / {nginx:.2f}s (nginx) after its check could pass "
          f"(interval {INTERVAL}s)")
    # at most one interval until the next check passes, then the etcd write and every agent applying
    # it: seen at 0.6-1.3 s (nginx) and 0.7-0.8 s (DNS) on a loaded 2-core machine.  The bound is
    # for correctness (brought back by the passing check, not by a later resync or restart), with
    # room for a loaded CI host; the speed is what the print shows
    assert dns < INTERVAL + 5.0, dns
    assert nginx < INTERVAL + 5.0, nginx
    assert dig(a.ip, a.dns_port, fqdn).records


@pytest.mark.parametrize("order", ["start-first", "stop-first"])
async def test_an_update_that_never_gets_healthy_rolls_back_and_the_old_version_answers_throughout(
    cluster: tuple[RealCluster, EtcdStore], docker_image: str, order: str
) -> None:
    """Start-first: the old version answers every request.  Stop-first: one instance (``parallel``)
    is down while its replacement fails, the others answer, and it comes back on the old version."""
    c, store = cluster
    name = ServiceName(group="lc", service="bad")
    good, start, load = await three_healthy_under_load(c, store, name, docker_image, order)
    t0 = time.monotonic()
    result = await asyncio.to_thread(
        c.cli, "svc", "set", str(name), "--cmd-json", json.dumps(NEVER_HEALTHY_CMD), "--env", "V=2", "--wait",
        "--timeout", "60", check=False)
    took = time.monotonic() - t0
    assert result.returncode == 6, (result.returncode, result.stderr)
    assert "rolled back" in result.stderr, result.stderr
    state = await until(store, lambda s: serving(name, good.runtime_hash, 3)(s) and not s.slots.get(name),
                        timeout=30, what="the old version back")
    assert state.services[name].runtime_hash == good.runtime_hash
    assert state.rollouts[name].state == "rolled-back"
    t = await replay(store, name, start=start, end=state.revision, target=good.runtime_hash, n=3)
    out = await load.result()
    print(f"{order}: rolled back {took:.1f}s after the update; at least {t.min_routable} of 3 served; "
          f"{out.requests} requests during it, {failed_requests(out)} failed")
    assert out.requests > 1000, out.outputs
    assert t.min_routable >= (3 if order == "start-first" else 2), t
    if order == "start-first":
        assert not out.errors, out.outputs
    history = json.loads(c.cli("svc", "history", str(name), "--json").stdout)
    assert [h["cause"] for h in history][-1].startswith("automatic rollback to")


async def test_a_paused_rollout_holds_until_svc_resume_then_finishes(
    cluster: tuple[RealCluster, EtcdStore], docker_image: str
) -> None:
    """on_failure pause: a replacement that is too slow for its deadline pauses the rollout (the
    old version keeps serving, nothing else is replaced); a longer deadline alone does not move
    it; ``svc resume`` does, and the rollout finishes."""
    c, store = cluster
    name = ServiceName(group="lc", service="pause")
    policy = {"parallel": 1, "min_healthy": "0.5s", "deadline": "2s", "on_failure": "pause"}
    old = spec(name, docker_image, 3, update=policy)
    await VersionStore(store).put_service(old)
    await until(store, serving(name, old.runtime_hash, 3), timeout=60, what="3 healthy")
    slow = ["sh", "-c", SERVE.format(health="(sleep 3; touch /www/healthz) & ")]  # healthy 3 s after start
    result = await asyncio.to_thread(c.cli, "svc", "set", str(name), "--cmd-json", json.dumps(slow), "--env", "V=2",
                                     "--wait", "--timeout", "60", check=False)
    assert result.returncode == 6 and "paused" in result.stderr, (result.returncode, result.stderr)
    status = json.loads(c.cli("svc", "status", str(name), "--json").stdout)
    assert status["rollout"] == "paused" and "not healthy" in status["reason"], status
    new_hash = (await VersionStore(store).get_service(name)).runtime_hash  # type: ignore[union-attr]
    c.cli("svc", "set", str(name), "--update-deadline", "15s")  # not a runtime change: still paused
    await asyncio.sleep(3)
    state = await store.snapshot()
    assert state.rollouts[name].state == "paused" and serving(name, old.runtime_hash, 3)(state)
    resumed = json.loads(c.cli("svc", "resume", str(name), "--json").stdout)
    assert resumed == {"service": str(name), "rollout": "rolling"}
    await until(store, lambda s: serving(name, new_hash, 3)(s) and not s.slots.get(name), timeout=90,
                what="the resumed rollout")
    assert json.loads(c.cli("svc", "status", str(name), "--json").stdout)["rollout"] == "complete"


async def test_a_container_unhealthy_for_restart_unhealthy_after_is_replaced(
    cluster: tuple[RealCluster, EtcdStore], docker_image: str
) -> None:
    c, store = cluster
    name = ServiceName(group="lc", service="restart")
    svc = ServiceSpec.from_dict({
        "image": docker_image, "instances": 1, "http_host": host(name), "http_port": 8080, "cmd": HEALTHY_CMD,
        "health": {**HEALTH, "restart_unhealthy_after": "1s"}}, name=name)
    await VersionStore(store).put_service(svc)
    state = await until(store, serving(name, svc.runtime_hash, 1), timeout=60, what="1 healthy")
    (before,) = state.instances_of(name)
    subprocess.run(["docker", "exec", before.container_id, "sh", "-c", "rm /www/healthz"], check=True)
    await until(store, lambda s: s.instances_of(name)[0].health == "unhealthy", timeout=10, what="unhealthy")
    t0 = time.monotonic()
    state = await until(store, lambda s: serving(name, svc.runtime_hash, 1)(s)
                        and s.instances_of(name)[0].container_id != before.container_id, timeout=30,
                        what="a new, healthy container")
    print(f"restarted and healthy again {time.monotonic() - t0:.1f}s after it turned unhealthy")
    assert before.container_id not in {x.container_id for x in docker_containers(
        c.node_ids, service=name.service, group=name.group)}


async def test_a_tcp_check_gates_routing(cluster: tuple[RealCluster, EtcdStore], docker_image: str) -> None:
    """A TCP connect check: the listener going away takes the instance out of DNS, its return
    brings it back (httpd runs in the background, so the container lives on without it)."""
    c, store = cluster
    name = ServiceName(group="lc", service="tcp")
    serve_bg = ["sh", "-c", "mkdir -p /www; echo $DAPRDOCKR_INSTANCE > /www/id; httpd -p 8080 -h /www; "
                            "exec sleep 100000"]
    svc = ServiceSpec.from_dict({
        "image": docker_image, "instances": 1, "http_port": 8080, "cmd": serve_bg,
        "health": {"tcp": 8080, "interval": f"{INTERVAL}s", "retries": 2, "timeout": "1s"}}, name=name)
    await VersionStore(store).put_service(svc)
    state = await until(store, serving(name, svc.runtime_hash, 1), timeout=60, what="1 healthy")
    (rec,) = state.instances_of(name)
    a = c.agents["l1"].addr
    fqdn = f"1.{name.service}.{name.group}.container"
    assert (await dig_until(a.ip, a.dns_port, fqdn, lambda d: bool(d.records))).records
    subprocess.run(["docker", "exec", rec.container_id, "sh", "-c", "killall httpd"], check=True)
    d = await dig_until(a.ip, a.dns_port, fqdn, lambda d: not d.records, timeout=10)
    assert d.status == "NOERROR" and not d.records, d  # (NODATA: instance 1 is still in the spec)
    assert (await store.snapshot()).instances_of(name)[0].health == "unhealthy"
    subprocess.run(["docker", "exec", rec.container_id, "sh", "-c", "httpd -p 8080 -h /www"], check=True)
    assert (await dig_until(a.ip, a.dns_port, fqdn, lambda d: bool(d.records), timeout=10)).records


async def test_the_stop_signal_of_the_spec_reaches_the_container(
    cluster: tuple[RealCluster, EtcdStore], docker_image: str, prefix: str
) -> None:
    """``stop_signal: SIGUSR1``: the container's shell traps it and writes which signal came into
    a named volume, which outlives the container."""
    c, store = cluster
    name = ServiceName(group="lc", service="sig")
    volume = f"daprdockr-test-sig-{prefix.strip('/')}"
    trap = ("trap 'echo USR1 > /sig/got; exit 0' USR1; trap 'echo TERM > /sig/got; exit 0' TERM; "
            "rm -f /sig/got; touch /tmp/trapped; sleep 100000 & wait")
    svc = ServiceSpec.from_dict({"image": docker_image, "instances": 1, "cmd": ["sh", "-c", trap],
                                 "volumes": [f"{volume}:/sig"], "stop_signal": "SIGUSR1", "stop_timeout": "60s"},
                                name=name)
    try:
        await VersionStore(store).put_service(svc)
        state = await until(store, lambda s: [r.state for r in s.instances_of(name)] == ["running"], timeout=60,
                            what="running")
        cid = state.instances_of(name)[0].container_id
        trapped = ["docker", "exec", cid, "test", "-e", "/tmp/trapped"]
        for _ in range(100):  # until the shell has set its traps
            if subprocess.run(trapped, capture_output=True).returncode == 0:
                break
            await asyncio.sleep(0.1)
        t0 = time.monotonic()
        await VersionStore(store).update_service(
            name, lambda cur, _: ServiceSpec.from_dict({**svc.to_dict(), "instances": 0}, name=name))
        await until(store, lambda s: not s.instances_of(name), timeout=30, what="released")
        while docker_containers(c.node_ids, service=name.service, group=name.group):
            assert time.monotonic() - t0 < 40, "not stopped by its stop signal (SIGKILL after 60 s?)"
            await asyncio.sleep(0.1)
        got = subprocess.run(["docker", "run", "--rm", "-v", f"{volume}:/sig", docker_image, "cat", "/sig/got"],
                             capture_output=True, text=True, check=True).stdout.strip()
        assert got == "USR1"
    finally:
        subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)


def failed_requests(out: WrkResult) -> int:
    """Socket errors and non-2xx answers, summed over every wrk."""
    total = 0
    for line in out.errors.splitlines():
        if "Non-2xx" in line:
            total += int(line.rsplit(":", 1)[1])
        else:
            total += sum(int(n) for n in re.findall(r"\b(?:connect|read|write|timeout) (\d+)", line))
    return total


@pytest.mark.parametrize("order", ["start-first", "stop-first"])
async def test_an_update_to_a_missing_image_rolls_back_by_itself(
    cluster: tuple[RealCluster, EtcdStore], docker_image: str, order: str
) -> None:
    """A replacement that cannot even start (its image tag does not exist: the pull fails, which
    is a transient error) fails the rollout: it is rolled back, without an operator.  Start-first
    never touches a serving container; stop-first takes at most ``parallel`` instances down (the
    failure does not cascade onto the next instances)."""
    c, store = cluster
    name = ServiceName(group="lc", service="noimg")
    good, start, load = await three_healthy_under_load(c, store, name, docker_image, order)
    missing = docker_image.rsplit(":", 1)[0] + ":no-such-tag"
    t0 = time.monotonic()
    result = await asyncio.to_thread(c.cli, "svc", "set", str(name), "--image", missing, "--wait", "--timeout", "60",
                                     check=False)
    took = time.monotonic() - t0
    assert result.returncode == 6, (result.returncode, result.stderr)
    assert "rolled back" in result.stderr and "could not start" in result.stderr, result.stderr
    state = await until(store, lambda s: serving(name, good.runtime_hash, 3)(s) and not s.slots.get(name),
                        timeout=30, what="the old version back on every instance")
    assert state.services[name].image == docker_image and state.rollouts[name].state == "rolled-back"
    t = await replay(store, name, start=start, end=state.revision, target=good.runtime_hash, n=3)
    out = await load.result()
    failed = failed_requests(out)
    print(f"{order}: rolled back {took:.1f}s after the update; at most {t.max_slots} in flight, at least "
          f"{t.min_routable} of 3 served; {out.requests} requests, {failed} failed")
    assert t.max_slots == 1, t
    assert t.min_routable >= (3 if order == "start-first" else 3 - 1), t
    assert out.requests > 1000, out.outputs
    if order == "start-first":
        assert failed == 0, out.outputs
    async with aiohttp.ClientSession() as session:
        a = c.agents["l1"].addr
        sample = await http_sample(session, ip=a.ip, port=a.http_port, host=host(name), count=30)
    assert set(sample.statuses) == {200} and sample.numbers == {1, 2, 3}, sample


@pytest.mark.parametrize("order", ["start-first", "stop-first"])
async def test_a_good_update_keeps_within_parallel_and_drops_nothing(
    cluster: tuple[RealCluster, EtcdStore], docker_image: str, order: str
) -> None:
    c, store = cluster
    name = ServiceName(group="lc", service="good")
    policy = {"parallel": 2, "order": order, "min_healthy": "1s", "deadline": "10s"}
    old = spec(name, docker_image, 6, update=policy)
    await VersionStore(store).put_service(old)
    await until(store, serving(name, old.runtime_hash, 6), timeout=60, what="6 healthy")
    await asyncio.sleep(1.5)
    start = await store.snapshot()
    load = Load(c, name, 25)
    new = spec(name, docker_image, 6, version="2", update=policy)
    t0 = time.monotonic()
    await VersionStore(store).put_service(new)
    end = await until(store, lambda s: serving(name, new.runtime_hash, 6)(s) and not s.slots.get(name), timeout=60,
                      what="the rollout")
    took = time.monotonic() - t0
    t = await replay(store, name, start=start, end=end.revision, target=new.runtime_hash, n=6)
    out = await load.result()
    print(f"{order}: 6 replaced in {took:.1f}s; at most {t.max_slots} in flight, at least {t.min_routable} served; "
          f"{out.requests} requests")
    assert t.max_slots == 2, t
    assert len(t.new_containers) == 6
    if t.min_routable < (6 if order == "start-first" else 4):
        c.dump_logs(120)
    assert t.min_routable >= (6 if order == "start-first" else 4), t
    assert out.requests > 1000 and not out.errors, out.outputs
    async with aiohttp.ClientSession() as session:
        a = c.agents["l1"].addr
        sample = await http_sample(session, ip=a.ip, port=a.http_port, host=host(name), count=60)
    assert {i.split()[2] for i in sample.identities} == {"2"}, sample.identities


async def test_an_agent_killed_mid_rollout_does_not_stall_it(
    cluster: tuple[RealCluster, EtcdStore], docker_image: str
) -> None:
    c, store = cluster
    name = ServiceName(group="lc", service="kill")
    policy = {"parallel": 1, "min_healthy": "2s", "deadline": "15s"}
    old = spec(name, docker_image, 6, update=policy)
    await VersionStore(store).put_service(old)
    await until(store, serving(name, old.runtime_hash, 6), timeout=60, what="6 healthy")
    new = spec(name, docker_image, 6, version="2", update=policy)
    await VersionStore(store).put_service(new)
    state = await until(store, lambda s: bool(s.slots.get(name)), timeout=30, what="a replacement in flight")
    (slot,) = state.slots[name].values()
    victim = c.agents[slot.node]
    victim.kill()  # SIGKILL: its slot and keys go only when its lease expires
    print(f"killed {slot.node} while it replaced instance {slot.instance}")
    done = await until(store, serving(name, new.runtime_hash, 6), timeout=90, what="the rollout on the others")
    assert all(r.node != slot.node for r in done.instances_of(name))


async def test_drain_moves_every_instance_without_a_failed_request_and_undrain_claims_again(
    cluster: tuple[RealCluster, EtcdStore], docker_image: str
) -> None:
    c, store = cluster
    name = ServiceName(group="lc", service="drain")
    svc = spec(name, docker_image, 6, update={"parallel": 2, "min_healthy": "1s", "deadline": "10s"})
    await VersionStore(store).put_service(svc)
    await until(store, lambda s: serving(name, svc.runtime_hash, 6)(s)
                and sum(r.node == "l2" for r in s.instances_of(name)) == 2, timeout=60, what="6 healthy, 2 on l2")
    await asyncio.sleep(1.5)
    load = Load(c, name, 15)
    result = await asyncio.to_thread(c.cli, "node", "drain", "l2", "--wait", "--timeout", "60", check=False)
    assert result.returncode == 0, result.stderr
    state = await store.snapshot()
    assert serving(name, svc.runtime_hash, 6)(state)
    assert {r.node for r in state.instances_of(name)} == {"l1", "l3"}
    nodes = {n["node"]: n for n in json.loads(c.cli("nodes", "--json").stdout)}
    assert nodes["l2"]["state"] == "drained" and nodes["l2"]["instances"] == 0
    out = await load.result()
    assert out.requests > 1000 and not out.errors, out.outputs
    assert not [x for x in docker_containers(["l2"], service=name.service, group=name.group)]

    c.cli("node", "undrain", "l2")
    await VersionStore(store).put_service(spec(name, docker_image, 9, update={"parallel": 2, "min_healthy": "1s",
                                                                "deadline": "10s"}))
    state = await until(store, lambda s: sum(r.node == "l2" and r.routable for r in s.instances_of(name)) == 3,
                        timeout=60, what="l2 claiming again")
    assert {n["node"]: n["state"] for n in json.loads(c.cli("nodes", "--json").stdout)}["l2"] == "ready"

    # --drain-on-shutdown (l3 runs with it): SIGTERM under load (through the nginx of the nodes
    # that stay) hands its instances over first
    load = Load(c, name, 12, skip="l3")
    await asyncio.sleep(0.5)
    # (more than its --drain-deadline 60: a drain that does not finish still ends in an exit)
    code = await asyncio.to_thread(c.agents["l3"].terminate, timeout=90)
    drained = "drained: every instance runs elsewhere" in c.agents["l3"].log_tail(80)
    if code != 0 or not drained:
        c.dump_logs(150)  # (the fixture does not see a test's failure: it would print nothing)
    assert code == 0 and drained
    state = await store.snapshot()
    assert {r.node for r in state.instances_of(name)} == {"l1", "l2"}
    assert sum(r.routable for r in state.instances_of(name)) == 9
    out = await load.result()
    assert out.requests > 500 and not out.errors, out.outputs
    c.agents["l3"].start()  # its next start lifts the drain it set
    c.wait_registered(["l3"])
    await until(store, lambda s: "l3" not in s.draining, timeout=20, what="l3's drain lifted")


async def test_history_and_rollback_round_trip(cluster: tuple[RealCluster, EtcdStore], docker_image: str) -> None:
    c, store = cluster
    name = ServiceName(group="lc", service="hist")
    fast = {"parallel": 3, "min_healthy": "0s", "deadline": "10s"}
    versions = [spec(name, docker_image, 1, version=str(v), update=fast) for v in range(1, 4)]
    for v in versions:
        await VersionStore(store).put_service(v)
    history = json.loads(c.cli("svc", "history", str(name), "--json").stdout)
    assert [h["version"] for h in history] == [1, 2, 3] and history[-1]["current"]
    assert [h["spec"]["env"]["V"] for h in history] == ["1", "2", "3"]

    c.cli("svc", "rollback", str(name), "--wait", "--timeout", "60")
    assert await VersionStore(store).get_service(name) == versions[1]
    await until(store, serving(name, versions[1].runtime_hash, 1), timeout=30, what="version 2 running")
    c.cli("svc", "rollback", str(name), "--to", "1")
    assert await VersionStore(store).get_service(name) == versions[0]
    history = json.loads(c.cli("svc", "history", str(name), "--json").stdout)
    assert [(h["version"], h["cause"]) for h in history][-2:] == [(4, "rollback to 2"), (5, "rollback to 1")]
    missing = c.cli("svc", "rollback", str(name), "--to", "99", check=False)
    assert missing.returncode == 3 and "no version 99" in missing.stderr
    for i in range(8):  # only the last 10 are kept
        await VersionStore(store).put_service(spec(name, docker_image, 1, version=f"x{i}", update=fast))
    history = json.loads(c.cli("svc", "history", str(name), "--json").stdout)
    assert [h["version"] for h in history] == list(range(4, 14))
