"""HTTP through the managed nginx while instances come and go: failed requests and throughput.

A real cluster (3 etcd members, 3 agent processes with nginx and DNS, 5 s TTL) runs the demo
service (busybox httpd in real containers).  For each client in turn — ``wrk`` with keep-alive,
``wrk`` with ``Connection: close``, ``hey`` (keep-alive) — the load goes through one agent's nginx
for ``--seconds`` while the service flips between 2 and 6 instances every ``--flip`` seconds
(real scale-ups and confirmed, drained scale-downs across the 3 agents).  Baselines, same run:
``wrk`` keep-alive straight at instance 1's published port (it is never removed), once with the
cluster idle and once while the same flips run (the flips' container starts and stops cost CPU
on a 2-core machine either way; the second baseline is the fair one for nginx's overhead).  Then
a scale-down from 9 to 3 under ``wrk`` keep-alive load.  Every ``wrk`` gives up on a request
after 10 s (a socket error); latency p99 and max are reported.

Targets: 0 failed requests (non-2xx + socket errors) for every client, throughput through nginx
>= 0.6 x the direct baseline under the same flips, 0 failed requests during the 9 -> 3 scale-down.

    .venv/bin/python bench/http_membership_bench.py [--seconds 60] [--flip 0.5] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from benchlib import HOST, WEB, hey, new_prefix, running_numbers, wait_state, web_spec, wrk
from tests.e2e.realcluster import RealCluster, real_cluster

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema


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
    rows: list[tuple[str, dict[str, float], int]] = []
    with tempfile.TemporaryDirectory(prefix="daprdockr-bench-") as tmp, \
            real_cluster(Path(tmp), prefix=prefix, node_prefix="h") as cluster:
        await asyncio.sleep(1.5)
        async with EtcdStore(endpoints=parse_endpoints(cluster.endpoints), schema=KeySchema(prefix)) as store:
            await store.put_service(web_spec(2))
            await wait_state(store, lambda s: running_numbers(s) == {1, 2}, timeout=60)
            await asyncio.sleep(1.0)
            state = await store.snapshot()
            one = next(r for r in state.instances_of(WEB) if r.number == 1)
            direct_url = f"http://{one.address}:{one.port_for(8080)}/id"
            rows.append(("direct at instance 1, cluster idle", await wrk(direct_url, seconds=seconds,
                                                                         connections=connections), 0))
            load = asyncio.create_task(wrk(direct_url, seconds=seconds, connections=connections))
            flips = await flipping(store, until=time.monotonic() + seconds - 1, every=flip)
            rows.append(("direct at instance 1, same flips (baseline)", await load, flips))
            await wait_state(store, lambda s: running_numbers(s) == {1, 2}, timeout=60)
            await asyncio.sleep(3)
            edge = next(iter(cluster.agents.values())).addr
            url = f"http://{edge.ip}:{edge.http_port}/id"
            clients = ["wrk keep-alive", "wrk Connection: close"] + (["hey keep-alive"] if shutil.which("hey") else [])
            for client in clients:
                load = asyncio.create_task(
                    hey(url, seconds=seconds, connections=connections, host=HOST) if client.startswith("hey")
                    else wrk(url, seconds=seconds, connections=connections, host=HOST, close=client.endswith("close")))
                flips = await flipping(store, until=time.monotonic() + seconds - 1, every=flip)
                rows.append((f"nginx, {client}", await load, flips))
                await wait_state(store, lambda s: running_numbers(s) == {1, 2}, timeout=60)
                await asyncio.sleep(3)  # the last scale-down's drains finish
            await store.put_service(web_spec(9))
            await wait_state(store, lambda s: running_numbers(s) == set(range(1, 10)), timeout=90)
            await asyncio.sleep(2)
            load = asyncio.create_task(wrk(url, seconds=15, connections=connections, host=HOST))
            await asyncio.sleep(3)
            await store.put_service(web_spec(3))
            rows.append(("nginx, wrk keep-alive, one scale-down 9 -> 3", await load, 1))
            report(cluster, rows, seconds=seconds, flip=flip, connections=connections)


def report(cluster: RealCluster, rows: list[tuple[str, dict[str, float], int]], *, seconds: int, flip: float,
           connections: int) -> None:
    direct = rows[1][1]["rps"]
    print(f"\nHTTP while instances change ({time.strftime('%Y-%m-%d')}): {seconds}s per client, flips every {flip}s "
          f"between 2 and 6 instances on {len(cluster.agents)} agents, {connections} connections")
    print("| client | flips | requests/s | x baseline | requests | latency p99 / max | non-2xx | socket errors "
          "| failed: target 0 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, r, flips in rows:
        failed = r["non2xx"] + r["socket_errors"]
        ratio = r["rps"] / direct if direct else 0.0
        verdict = "" if label.startswith("direct") else ("met" if failed == 0 else "MISSED")
        print(f"| {label} | {flips} | {r['rps']:.0f} | {ratio:.2f} | {r['requests']:.0f} | "
              f"{r.get('latency_p99', '?')} / {r.get('latency_max', '?')} | {r['non2xx']:.0f} | "
              f"{r['socket_errors']:.0f} | {failed:.0f} {verdict} |")
    throughput = min(r["rps"] for label, r, _ in rows[2:] if "keep-alive" in label and "9 -> 3" not in label) / direct
    print(f"\nthroughput through nginx (keep-alive, worst client) = {throughput:.2f} x direct: "
          f"target >= 0.6 {'met' if throughput >= 0.6 else 'MISSED'} (baseline: direct under the same flips)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--flip", type=float, default=0.5)
    parser.add_argument("--connections", type=int, default=16)
    a = parser.parse_args()
    asyncio.run(main(a.seconds, a.flip, a.connections))
