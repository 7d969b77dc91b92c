"""etcd housekeeping against real etcd members started here with a small quota (16 MiB):

* a long churn of service changes with the agents' compaction on never raises NOSPACE (no defrag),
  with the housekeeper component and under a real agent process;
* the same churn with it off fills the quota: a hollow agent process's ``/healthz``, ``/metrics``
  and ``daprdockr status`` show the alarm, ``svc set`` fails saying what to do, and the agent's
  DNS still answers its instance;
* two agents' housekeepers share one etcd: only the node that joined first compacts, and when it
  leaves (its lease ends) the other takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import aiohttp
import dns.message
import dns.query
import dns.rdatatype
import pytest

from daprdockr.adapters.etcd_maintenance import EtcdMaintenance
from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.agent.etcd_housekeeping import EtcdHousekeeper
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import NodeRecord
from daprdockr.errors import StoreFullError
from tests.e2e.realcluster import free_port_on
from tests.support.procs import EtcdCluster, terminate

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

QUOTA = 16 * 1024 * 1024
CHURN = ServiceName(group="myapp", service="churn")
WEB = ServiceName(group="myapp", service="web")
CHANGES = 4000  # ~4 KiB specs, each change also writes a history entry: ~8 KiB of revisions each


@contextlib.contextmanager
def small_etcd(tmp: Path) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp, size=1, extra_args=(f"--quota-backend-bytes={QUOTA}",))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@contextlib.asynccontextmanager
async def store_of(endpoints: str, prefix: str) -> AsyncIterator[EtcdStore]:
    async with EtcdStore(endpoints=parse_endpoints(endpoints), schema=KeySchema(prefix), timeout=3.0) as store:
        yield store


def churn_spec(n: int) -> ServiceSpec:
    return ServiceSpec.from_dict({"image": "busybox", "instances": 0, "env": {"PAD": "x" * 4000, "N": str(n)}},
                                 name=CHURN)


async def churn(store: EtcdStore, changes: int) -> int:
    """Change the same service over and over; returns how many changes were written before a
    write was refused for space (``changes`` if none was)."""
    for n in range(changes):
        try:
            await VersionStore(store).put_service(churn_spec(n))
        except StoreFullError:
            return n
    return changes


async def test_churn_with_the_agents_compaction_on_stays_within_a_small_quota(tmp_path: Path) -> None:
    with small_etcd(tmp_path) as etcd:
        async with store_of(etcd.endpoints, "/hk") as store:
            lease = await store.grant_lease(60)
            only = {"n1": NodeRecord(node_id="n1", address="127.0.0.11", create_revision=1)}
            keeper = EtcdHousekeeper(maintenance=EtcdMaintenance(store), node_id="n1", lease=lambda: lease,
                                     nodes=lambda: only, interval=1.0, quota=QUOTA, poll_interval=1.0)
            task = asyncio.create_task(keeper.run())  # the component itself: its two timers
            try:
                started = time.monotonic()
                written = await churn(store, CHANGES)
                took = time.monotonic() - started
                health = await keeper.poll_once()
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            assert written == CHANGES, f"NOSPACE after {written} changes with compaction on"
            assert health.alarms == () and not health.problem and health.db_size < QUOTA
            assert keeper.health.compactions >= 3 and keeper.health.compacted_revision > 0  # (again and again)
            assert keeper.health.compactor == "n1" and not keeper.health.compact_error
            print(f"{CHANGES} changes in {took:.1f}s, {keeper.health.compactions} compactions, database "
                  f"{health.db_size} bytes ({health.db_size_in_use} in use) of {QUOTA}")


async def test_two_housekeepers_the_first_joined_compacts_and_the_other_takes_over_when_it_leaves(
        etcd_endpoints: str, prefix: str) -> None:
    async with store_of(etcd_endpoints, prefix) as store:
        leases = {"n1": await store.grant_lease(2), "n2": await store.grant_lease(2)}
        for node in ("n2", "n1"):  # n2 joins first
            await store.put_node(NodeRecord(node_id=node, address="127.0.0.11"), lease=leases[node])
        nodes: dict[str, Mapping[str, NodeRecord]] = {"now": {}}
        keepers = {node: EtcdHousekeeper(maintenance=EtcdMaintenance(store), node_id=node,
                                         lease=lambda node=node: leases[node],  # type: ignore[misc]
                                         nodes=lambda: nodes["now"], interval=0.5, quota=QUOTA)
                   for node in leases}
        compacted: dict[str, list[int]] = {"n1": [], "n2": []}
        ticks = iter(range(1000))

        async def tick(*alive: str) -> None:
            for node in alive:
                await store.keepalive(leases[node])
            await VersionStore(store).put_service(churn_spec(next(ticks)))  # (a write: something to compact)
            nodes["now"] = (await store.snapshot()).nodes  # (the node records, as each agent's mirror has them)
            for node in alive:
                target = await keepers[node].compact_once()
                if target:
                    compacted[node].append(target)

        for _ in range(8):  # both tick every interval
            await tick("n1", "n2")
            await asyncio.sleep(0.5)
        assert len(compacted["n2"]) >= 5 and compacted["n1"] == []  # one compactor: the node that joined first
        assert keepers["n1"].health.compactor == "n2" == keepers["n2"].health.compactor
        assert compacted["n2"] == sorted(compacted["n2"])
        for _ in range(5):  # n2's lease ends (its agent died): its node record goes with it
            await store.keepalive(leases["n1"])
            await asyncio.sleep(0.5)
        for _ in range(6):
            await tick("n1")
            await asyncio.sleep(0.5)
        assert "n2" not in nodes["now"]
        assert len(compacted["n1"]) >= 3 and keepers["n1"].health.compactor == "n1"
        assert compacted["n1"][0] > compacted["n2"][-1]


@contextlib.contextmanager
def hollow_agent(*, etcd: str, prefix: str, ip: str, dns_port: int, api_port: int, tmp: Path,
                 compact: str = "off") -> Iterator[subprocess.Popen[bytes]]:
    """A hollow agent process (never compacting by default), told the quota, its DNS and API on ``ip``."""
    with open(tmp / "agent.log", "ab") as log:
        agent = subprocess.Popen(
            [sys.executable, "-m", "daprdockr", "agent", "--runtime", "hollow", "--node-id", "h1", "--advertise-ip", ip,
             "--ttl", "5", "--state-dir", str(tmp / "state"), "--dns-listen", f"{ip}:{dns_port}",
             "--http-listen", "off", "--api-listen", f"{ip}:{api_port}", "--compact-interval", compact,
             "--etcd-quota-bytes", "16MiB"],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "DAPRDOCKR_ETCD": etcd, "DAPRDOCKR_PREFIX": prefix})
    try:
        yield agent
    finally:
        terminate(agent, grace=10)


def cli(endpoints: str, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daprdockr", "--etcd", endpoints, "--prefix", prefix, *args],
                          capture_output=True, text=True, timeout=60)


def ask_dns(ip: str, port: int, name: str) -> list[str]:
    reply = dns.query.udp(dns.message.make_query(name, dns.rdatatype.A), ip, port=port, timeout=2)
    return [item.address for rrset in reply.answer for item in rrset]


async def wait_until(check, *, within: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    last: object = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = await check()
            if last:
                return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what} not within {within}s; last: {last!r}")


async def test_an_agent_process_compacting_keeps_a_long_churn_within_the_quota(tmp_path: Path) -> None:
    """The same churn under a real agent process (``--compact-interval 1s``): no NOSPACE, and its
    ``/healthz`` and ``/metrics`` show the compactions it made."""
    ip = "127.0.0.22"
    dns_port, api_port = free_port_on(ip), free_port_on(ip)
    prefix = "/hk"
    with small_etcd(tmp_path) as etcd, hollow_agent(etcd=etcd.endpoints, prefix=prefix, ip=ip, dns_port=dns_port,
                                                    api_port=api_port, tmp=tmp_path, compact="1s") as agent:
        async with store_of(etcd.endpoints, prefix) as store, aiohttp.ClientSession() as http:
            await wait_until(lambda: _metrics(http, ip, api_port), within=30, what="the agent's API")
            written = await churn(store, CHANGES)
            assert written == CHANGES, f"NOSPACE after {written} changes under a compacting agent"
            metrics = await _metrics(http, ip, api_port)
            assert _compactions(metrics) >= 3, metrics
            async with http.get(f"http://{ip}:{api_port}/healthz") as resp:
                space = (await resp.json())["checks"]["etcd_space"]
            assert space["ok"] and space.get("alarms", []) == [], space
            assert 'daprdockr_etcd_alarm{alarm="NOSPACE"} 1' not in metrics
            assert agent.poll() is None
            print(f"{CHANGES} changes, {_compactions(metrics)} compactions by the agent process")


async def _metrics(http: aiohttp.ClientSession, ip: str, port: int) -> str:
    async with http.get(f"http://{ip}:{port}/metrics") as resp:
        return await resp.text()


def _compactions(metrics: str) -> int:
    for line in metrics.splitlines():
        if line.startswith("daprdockr_etcd_compactions_total "):
            return int(float(line.split()[1]))
    return 0


async def test_without_compaction_the_alarm_shows_writes_fail_clearly_and_dns_keeps_answering(
        tmp_path: Path) -> None:
    ip = "127.0.0.21"
    dns_port, api_port = free_port_on(ip), free_port_on(ip)
    prefix = "/hk"
    with small_etcd(tmp_path) as etcd, hollow_agent(etcd=etcd.endpoints, prefix=prefix, ip=ip, dns_port=dns_port,
                                                    api_port=api_port, tmp=tmp_path) as agent:
        async with store_of(etcd.endpoints, prefix) as store, aiohttp.ClientSession() as http:
            await VersionStore(store).put_service(ServiceSpec(name=WEB, image="busybox", instances=1))
            await wait_until(lambda: asyncio.to_thread(ask_dns, ip, dns_port, "1.web.myapp.container"),
                             within=30, what="DNS answering instance 1")
            written = await churn(store, 10 * CHANGES)
            assert written < 10 * CHANGES, "the quota was never reached"
            print(f"NOSPACE after {written} changes with compaction off")
            # the write that hit the quota says so and what to do
            with pytest.raises(StoreFullError) as refused:
                await VersionStore(store).put_service(churn_spec(0))
            for words in ("database is full", "NOSPACE", "etcdctl defrag", "etcdctl alarm disarm"):
                assert words in str(refused.value)
            set_web = cli(etcd.endpoints, prefix, "svc", "set", "other.myapp", "--image", "busybox",
                          "--instances", "1")
            assert set_web.returncode != 0 and "database is full" in set_web.stderr, set_web.stderr
            assert "etcdctl alarm disarm" in set_web.stderr and "Traceback" not in set_web.stderr

            async def healthz() -> dict[str, object] | None:
                async with http.get(f"http://{ip}:{api_port}/healthz") as resp:
                    body = await resp.json()
                return body if not body["checks"]["etcd_space"]["ok"] else None

            body = await wait_until(healthz, within=20, what="/healthz showing the alarm")
            space = body["checks"]["etcd_space"]
            assert body["status"] == "degraded" and space["alarms"] == ["NOSPACE"]
            assert "NOSPACE" in space["detail"] and "etcdctl defrag" in space["detail"]
            async with http.get(f"http://{ip}:{api_port}/metrics") as resp:
                metrics = await resp.text()
            assert 'daprdockr_etcd_alarm{alarm="NOSPACE"} 1' in metrics
            assert f"daprdockr_etcd_quota_bytes {QUOTA}" in metrics

            shown = cli(etcd.endpoints, prefix, "status", "--etcd-quota-bytes", "16MiB")
            assert shown.returncode == 0 and "ALARM NOSPACE" in shown.stdout, shown.stdout + shown.stderr
            as_json = json.loads(cli(etcd.endpoints, prefix, "status", "--json").stdout)
            assert as_json["etcd"]["alarms"] == ["NOSPACE"] and not as_json["etcd"]["ok"]

            # running services keep serving: the agent's DNS still answers the instance
            assert ask_dns(ip, dns_port, "1.web.myapp.container") == [ip]
            await asyncio.sleep(6)  # longer than the lease's TTL: keepalives go on under NOSPACE
            assert ask_dns(ip, dns_port, "1.web.myapp.container") == [ip]
            assert agent.poll() is None
