"""An instance that moves between nodes is never NXDOMAIN, and negative answers are cached for a
second at most (issue "DNS under abuse", item 5).

Two hollow agents (real etcd, leases, claims and DNS; no Docker) with DNS on 127.0.0.41 and
127.0.0.42; a service of 4 instances.  The agent holding instances is stopped (SIGTERM: its
records go, the other agent claims them), while a client asks the other agent's DNS for every
instance name without pause.  Before the fix a moving name answered NXDOMAIN with a 5 s negative
TTL for 0.2-0.4 s (compose dev cluster, ``docker-compose stop agent2``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from tests.e2e.realcluster import free_port_on
from tests.support.procs import terminate

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

WEB = ServiceName.parse("web.mv")
INSTANCES = 4


def agent(node: str, ip: str, dns_port: int, *, etcd: str, prefix: str, tmp: Path) -> subprocess.Popen[bytes]:
    log = open(tmp / f"{node}.log", "ab")  # noqa: SIM115 - lives with the process
    return subprocess.Popen(
        [sys.executable, "-m", "daprdockr", "agent", "--runtime", "hollow", "--hollow-start-delay", "0.01",
         "--node-id", node, "--advertise-ip", ip, "--ttl", "5", "--state-dir", str(tmp / node),
         "--dns-listen", f"{ip}:{dns_port}", "--dns-workers", "0", "--http-listen", "off",
         "--api-listen", f"{ip}:{free_port_on(ip)}", "--rebalance", "off"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "DAPRDOCKR_ETCD": etcd, "DAPRDOCKR_PREFIX": prefix})


async def ask(server: tuple[str, int], name: str) -> dns.message.Message:
    return await dns.asyncquery.udp(dns.message.make_query(name, "A"), server[0], port=server[1], timeout=5)


async def test_a_moving_instance_is_never_nxdomain(etcd_endpoints: str, prefix: str, tmp_path: Path) -> None:
    ips = {"m1": "127.0.0.41", "m2": "127.0.0.42"}
    ports = {node: free_port_on(ip) for node, ip in ips.items()}
    procs = {node: agent(node, ip, ports[node], etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path)
             for node, ip in ips.items()}
    try:
        async with EtcdStore(endpoints=parse_endpoints(etcd_endpoints), schema=KeySchema(prefix)) as store:
            deadline = time.monotonic() + 60
            while len((await store.snapshot()).nodes) < 2:
                assert time.monotonic() < deadline, "agents did not register"
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.5)  # (both settled: claims start after a short grace)
            await VersionStore(store).put_service(ServiceSpec.from_dict({"image": "hollow", "instances": INSTANCES,
                                                           "http_port": 8080}, name=WEB))
            names = [f"{n}.web.mv.container" for n in range(1, INSTANCES + 1)]
            while True:
                state = await store.snapshot()
                placed = Counter(r.node for r in state.instances.values() if r.state == "running")
                answered = [await ask((ips["m1"], ports["m1"]), n) for n in names]
                if sum(placed.values()) == INSTANCES and all(m.answer for m in answered):
                    break
                assert time.monotonic() < deadline, f"not converged: {placed}"
                await asyncio.sleep(0.2)
            leaving = max(placed, key=lambda node: placed[node])
            staying = next(node for node in ips if node != leaving)
            server = (ips[staying], ports[staying])

            rcodes: Counter[str] = Counter()
            negative_ttls: set[int] = set()
            procs[leaving].terminate()  # SIGTERM: its records go, the other node claims them
            t0 = time.monotonic()
            while time.monotonic() - t0 < 20:
                replies = await asyncio.gather(*(ask(server, n) for n in names))
                for reply in replies:
                    rcodes[dns.rcode.to_text(reply.rcode())] += 1
                    negative_ttls.update(rr.ttl for rr in reply.authority if rr.rdtype == dns.rdatatype.SOA)
                if all(r.answer for r in replies) and procs[leaving].poll() is not None:
                    state = await store.snapshot()
                    if all(r.node == staying and r.state == "running" for r in state.instances.values()) \
                            and len(state.instances) == INSTANCES:
                        break
                await asyncio.sleep(0.005)
            else:
                raise AssertionError(f"the instances did not move to {staying}: {rcodes}")
            moved = time.monotonic() - t0
            print(f"\nmoved {placed[leaving]} instances {leaving} -> {staying} in {moved:.2f}s; "
                  f"answers {dict(rcodes)}, negative TTLs {sorted(negative_ttls)}", file=sys.stderr)
            assert rcodes["NXDOMAIN"] == 0, rcodes
            assert rcodes["NOERROR"] == sum(rcodes.values()), rcodes
            assert negative_ttls <= {1}, negative_ttls  # (NODATA while the instance starts again)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            terminate(proc, grace=15)
