"""HTTP through the managed nginx while instances come and go: failed requests and throughput.

A real cluster (3 etcd members, 3 agent processes with nginx and DNS, 5 s TTL) runs the demo
service (busybox httpd in real containers).  Three clients, as in the reload benchmark this
replaced: ``wrk`` with keep-alive, ``wrk`` with ``Connection: close``, ``hey`` (keep-alive, a Go
net/http client).  Each runs for ``--seconds`` while the service flips between 2 and 6 instances
every ``--flip`` seconds (real scale-ups and confirmed, drained scale-downs across the 3 agents):
first straight at instance 1's published port (it is never removed), right after through one
agent's nginx.  The baseline is ``wrk`` keep-alive straight at instance 1 under the flips (the
flips' container starts and stops cost CPU on a 2-core machine either way); each client is also
compared with itself straight at instance 1, measured just before, since the load generator
shares the 2 cores and hey costs several times wrk's CPU per request.  Also ``wrk`` keep-alive
straight at instance 1 with the cluster idle, and a scale-down from 9 to 3 under ``wrk``
keep-alive load through nginx.  Every ``wrk`` gives up on a request after 10 s (a socket error);
latency p99 and max are reported.  During the runs the host's TIME_WAIT sockets are capped
(``benchlib.time_wait_cap``; restored after): without it, the connections each run leaves in
TIME_WAIT at instance 1's port made the next direct run there stall, to 380 requests/s.

Targets: 0 failed requests (non-2xx + socket errors) through nginx for every client, throughput
through nginx >= 0.6 x the direct baseline under the same flips (printed against wrk and against
the same client), 0 failed requests during the 9 -> 3 scale-down.

    .venv/bin/python bench/http_membership_bench.py [--seconds 60] [--flip 0.5] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchlib import HOST, WEB, hey, new_prefix, running_numbers, time_wait_cap, wait_state, web_spec, wrk
from tests.e2e.realcluster import RealCluster, real_cluster

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema


@dataclass(frozen=True, kw_only=True)
class Row:
    label: str
    via: str  # "direct" (straight at instance 1) or "nginx"
    client: str
    result: dict[str, float]
    flips: int


async def run_client(client: str, url: str, *, seconds: int, connections: int) -> dict[str, float]:
    if client.startswith("hey"):
        return await hey(url, seconds=seconds, connections=connections, host=HOST)
    return await wrk(url, seconds=seconds, connections=connections, host=HOST, close=client.endswith("close"))


async def flipping(store: EtcdStore, *, until: float, every: float) -> int:
    flips = 0
    while time.monotonic() < until:
        flips += 1
        await store.put_service(web_spec(6 if flips % 2 else 2))
        await asyncio.sleep(every)
    await store.put_service(web_spec(2))
    return flips


async def main(seconds: int, flip: float, connections: int) -> None:
    prefix = new_prefix()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="daprdockr-bench-") as tmp, time_wait_cap() as time_wait, \
            real_cluster(Path(tmp), prefix=prefix, node_prefix="h") as cluster:
        await asyncio.sleep(1.5)
        async with EtcdStore(endpoints=parse_endpoints(cluster.endpoints), schema=KeySchema(prefix)) as store:
            await store.put_service(web_spec(2))
            await wait_state(store, lambda s: running_numbers(s) == {1, 2}, timeout=60)
            await asyncio.sleep(1.0)
            state = await store.snapshot()
            one = next(r for r in state.instances_of(WEB) if r.number == 1)
            direct_url = f"http://{one.address}:{one.port_for(8080)}/id"
            idle = await run_client("wrk keep-alive", direct_url, seconds=seconds, connections=connections)
            rows.append(Row(label="wrk keep-alive straight at instance 1, cluster idle", via="direct",
                            client="wrk keep-alive", result=idle, flips=0))
            edge = next(iter(cluster.agents.values())).addr
            url = f"http://{edge.ip}:{edge.http_port}/id"
            clients = ["wrk keep-alive", "wrk Connection: close"] + (["hey keep-alive"] if shutil.which("hey") else [])
            for client in clients:
                # each client twice under the same flips: straight at instance 1 (never removed), then
                # through nginx; adjacent in time, so both see the machine in the same state
                for via, target in (("direct", direct_url), ("nginx", url)):
                    load = asyncio.create_task(run_client(client, target, seconds=seconds, connections=connections))
                    flips = await flipping(store, until=time.monotonic() + seconds - 1, every=flip)
                    label = f"{client} {'straight at instance 1' if via == 'direct' else 'through nginx'}, flips"
                    rows.append(Row(label=label, via=via, client=client, result=await load, flips=flips))
                    await wait_state(store, lambda s: running_numbers(s) == {1, 2}, timeout=60)
                    await asyncio.sleep(3)  # the last scale-down's drains finish
            await store.put_service(web_spec(9))
            await wait_state(store, lambda s: running_numbers(s) == set(range(1, 10)), timeout=90)
            await asyncio.sleep(2)
            load = asyncio.create_task(wrk(url, seconds=15, connections=connections, host=HOST))
            await asyncio.sleep(3)
            await store.put_service(web_spec(3))
            rows.append(Row(label="wrk keep-alive through nginx, one scale-down 9 -> 3", via="nginx",
                            client="scale-down", result=await load, flips=1))
            report(cluster, rows, seconds=seconds, flip=flip, connections=connections)
            print(time_wait)


def report(cluster: RealCluster, rows: list[Row], *, seconds: int, flip: float, connections: int) -> None:
    direct = {r.client: r.result["rps"] for r in rows if r.via == "direct" and r.flips}
    baseline = direct["wrk keep-alive"]
    print(f"\nHTTP while instances change ({time.strftime('%Y-%m-%d %H:%M')}): {seconds}s per run, flips every "
          f"{flip}s between 2 and 6 instances on {len(cluster.agents)} agents, {connections} connections")
    print("| run | flips | requests/s | x wrk direct (baseline) | x same client direct | requests "
          "| latency p99 / max | non-2xx | socket errors | failed: target 0 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        res = r.result
        failed = res["non2xx"] + res["socket_errors"]
        same = f"{res['rps'] / direct[r.client]:.2f}" if r.via == "nginx" and r.client in direct else "-"
        verdict = "" if r.via == "direct" else ("met" if failed == 0 else "MISSED")
        print(f"| {r.label} | {r.flips} | {res['rps']:.0f} | {res['rps'] / baseline:.2f} | "
              f"{same} | "
              f"{res['requests']:.0f} | {res.get('latency_p99', '?')} / {res.get('latency_max', '?')} | "
              f"{res['non2xx']:.0f} | {res['socket_errors']:.0f} | {failed:.0f} {verdict} |")
    print()
    for r in rows:
        if r.via == "nginx" and r.client in direct:
            vs_wrk, vs_same = r.result["rps"] / baseline, r.result["rps"] / direct[r.client]
            print(f"{r.client} through nginx: {vs_wrk:.2f} x wrk straight at instance 1, "
                  f"{vs_same:.2f} x {r.client} straight at instance 1 (target >= 0.6: "
                  f"{'met' if vs_wrk >= 0.6 else 'MISSED'} against wrk, {'met' if vs_same >= 0.6 else 'MISSED'} "
                  f"against the same client)")
    failed = sum(r.result["non2xx"] + r.result["socket_errors"] for r in rows if r.via == "nginx")
    print(f"failed requests through nginx, all clients and the scale-down: {failed:.0f} "
          f"(target 0: {'met' if failed == 0 else 'MISSED'})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--flip", type=float, default=0.5)
    parser.add_argument("--connections", type=int, default=16)
    a = parser.parse_args()
    asyncio.run(main(a.seconds, a.flip, a.connections))
