"""HTTP through the managed nginx while instances come and go: failed requests and throughput.

A real cluster (3 etcd members, 3 agent processes with nginx and DNS, 5 s TTL) runs the demo
service (busybox httpd in real containers).  Three clients, as in the reload benchmark this
replaced: ``wrk`` with keep-alive, ``wrk`` with ``Connection: close``, ``hey`` (keep-alive, a Go
net/http client).  Each runs for ``--seconds`` in all straight at instance 1's published port (it
is never removed) and ``--seconds`` in all through one agent's nginx, while the service flips
between 2 and 6 instances every ``--flip`` seconds (real scale-ups and confirmed, drained
scale-downs across the 3 agents).  The time is cut into ``--rounds`` rounds; in each round every
client runs one segment straight at instance 1, then one through nginx, so a direct figure and a
figure through nginx are always measured seconds apart.  On a 2-core machine that also runs the
flips' container starts and stops, 10 s runs straight at instance 1 within one cluster's life gave
anything from 1 800 to 2 900 requests/s; measured in one block each, a client's two runs could land
in different phases of that drift.  The baseline is ``wrk`` keep-alive straight at instance 1 under
the flips; each client is also compared with itself straight at instance 1, since the load
generator shares the 2 cores and hey costs several times wrk's CPU per request.  Figures are means
over the rounds, and the per-round ratios are printed too.  Also ``wrk`` keep-alive straight at
instance 1 with the cluster idle (one segment), and a scale-down from 9 to 3 under ``wrk``
keep-alive load through nginx.  Every ``wrk`` gives up on a request after 10 s (a socket error);
latency p99 (the worst segment's) and max are reported: hey's own, and wrk's only where they keep
Little's law (``benchlib.parse_wrk``; at 16 connections wrk 4.1 printed averages far above
connections / throughput).  During the runs the host's TIME_WAIT
sockets are capped (``benchlib.time_wait_cap``; restored after): without it, the connections each
run leaves in TIME_WAIT at instance 1's port made the next direct run there stall, to 380
requests/s.

Targets: 0 failed requests (non-2xx + socket errors) through nginx for every client, throughput
through nginx >= 0.6 x the direct baseline under the same flips (printed against wrk and against
the same client), 0 failed requests during the 9 -> 3 scale-down.

    .venv/bin/python bench/http_membership_bench.py [--seconds 60] [--rounds 6] [--flip 0.5] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchlib import (
    HOST,
    LATENCY_UNTRUSTED,
    WEB,
    hey,
    new_prefix,
    running_numbers,
    seconds_of,
    time_wait_cap,
    wait_state,
    web_spec,
    wrk,
)
from tests.e2e.realcluster import RealCluster, real_cluster

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema


@dataclass(frozen=True, kw_only=True)
class Row:
    label: str
    via: str  # "direct" (straight at instance 1) or "nginx"
    client: str
    segments: tuple[dict[str, float], ...]  # one per round
    flips: int

    @property
    def rps(self) -> float:
        return statistics.fmean(seg["rps"] for seg in self.segments)

    def total(self, key: str) -> float:
        return sum(seg[key] for seg in self.segments)

    def worst(self, key: str) -> str:
        if any(seg.get(key) == LATENCY_UNTRUSTED for seg in self.segments):
            return LATENCY_UNTRUSTED
        known = [seg[key] for seg in self.segments if not math.isnan(seconds_of(seg.get(key)))]
        return str(max(known, key=seconds_of)) if known else "?"


async def run_client(client: str, url: str, *, seconds: int, connections: int) -> dict[str, float]:
    if client.startswith("hey"):
        return await hey(url, seconds=seconds, connections=connections, host=HOST)
    return await wrk(url, seconds=seconds, connections=connections, host=HOST, close=client.endswith("close"))


async def flipping(store: EtcdStore, *, until: float, every: float) -> int:
    flips = 0
    while time.monotonic() < until:
        flips += 1
        await VersionStore(store).put_service(web_spec(6 if flips % 2 else 2))
        await asyncio.sleep(every)
    await VersionStore(store).put_service(web_spec(2))
    return flips


async def main(seconds: int, rounds: int, flip: float, connections: int) -> None:
    prefix = new_prefix()
    rows: list[Row] = []
    segment = max(1, seconds // rounds)
    with tempfile.TemporaryDirectory(prefix="daprdockr-bench-") as tmp, time_wait_cap() as time_wait, \
            real_cluster(Path(tmp), prefix=prefix, node_prefix="h") as cluster:
        await asyncio.sleep(1.5)
        async with EtcdStore(endpoints=parse_endpoints(cluster.endpoints), schema=KeySchema(prefix)) as store:
            await VersionStore(store).put_service(web_spec(2))
            await wait_state(store, lambda s: running_numbers(s) == {1, 2}, timeout=60)
            await asyncio.sleep(1.0)
            state = await store.snapshot()
            one = next(r for r in state.instances_of(WEB) if r.number == 1)
            direct_url = f"http://{one.address}:{one.port_for(8080)}/id"
            idle = await run_client("wrk keep-alive", direct_url, seconds=segment, connections=connections)
            rows.append(Row(label="wrk keep-alive straight at instance 1, cluster idle", via="direct",
                            client="wrk keep-alive", segments=(idle,), flips=0))
            edge = next(iter(cluster.agents.values())).addr
            url = f"http://{edge.ip}:{edge.http_port}/id"
            clients = ["wrk keep-alive", "wrk Connection: close"] + (["hey keep-alive"] if shutil.which("hey") else [])
            runs: dict[tuple[str, str], list[dict[str, float]]] = {}
            flips: dict[tuple[str, str], int] = {}
            for _ in range(rounds):
                for client in clients:
                    # straight at instance 1 (never removed), then through nginx, under the same flips
                    for via, target in (("direct", direct_url), ("nginx", url)):
                        load = asyncio.create_task(run_client(client, target, seconds=segment, connections=connections))
                        done = await flipping(store, until=time.monotonic() + segment - 1, every=flip)
                        runs.setdefault((client, via), []).append(await load)
                        flips[(client, via)] = flips.get((client, via), 0) + done
                        await wait_state(store, lambda s: running_numbers(s) == {1, 2}, timeout=60)
                        await asyncio.sleep(3)  # the last scale-down's drains finish
            for (client, via), segs in runs.items():
                where = "straight at instance 1" if via == "direct" else "through nginx"
                rows.append(Row(label=f"{client} {where}, flips", via=via, client=client, segments=tuple(segs),
                                flips=flips[(client, via)]))
            await VersionStore(store).put_service(web_spec(9))
            await wait_state(store, lambda s: running_numbers(s) == set(range(1, 10)), timeout=90)
            await asyncio.sleep(2)
            load = asyncio.create_task(wrk(url, seconds=15, connections=connections, host=HOST))
            await asyncio.sleep(3)
            await VersionStore(store).put_service(web_spec(3))
            rows.append(Row(label="wrk keep-alive through nginx, one scale-down 9 -> 3", via="nginx",
                            client="scale-down", segments=(await load,), flips=1))
            report(cluster, rows, seconds=seconds, rounds=rounds, flip=flip, connections=connections)
            print(time_wait)


def report(
    cluster: RealCluster, rows: list[Row], *, seconds: int, rounds: int, flip: float, connections: int
) -> None:
    direct = {r.client: r for r in rows if r.via == "direct" and r.flips}
    baseline = direct["wrk keep-alive"]
    print(f"\nHTTP while instances change ({time.strftime('%Y-%m-%d %H:%M')}): {seconds}s per client and path "
          f"in {rounds} rounds, flips every {flip}s between 2 and 6 instances on {len(cluster.agents)} agents, "
          f"{connections} connections")
    print("| run | flips | requests/s (mean of rounds) | x wrk direct (baseline) | x same client direct | requests "
          "| latency p99 (worst round) / max | non-2xx | socket errors | failed: target 0 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        failed = r.total("non2xx") + r.total("socket_errors")
        same = f"{r.rps / direct[r.client].rps:.2f}" if r.via == "nginx" and r.client in direct else "-"
        verdict = "" if r.via == "direct" else ("met" if failed == 0 else "MISSED")
        print(f"| {r.label} | {r.flips} | {r.rps:.0f} | {r.rps / baseline.rps:.2f} | {same} | "
              f"{r.total('requests'):.0f} | {r.worst('latency_p99')} / {r.worst('latency_max')} | "
              f"{r.total('non2xx'):.0f} | {r.total('socket_errors'):.0f} | {failed:.0f} {verdict} |")
    print()
    for r in rows:
        if r.via == "nginx" and r.client in direct:
            vs_wrk, vs_same = r.rps / baseline.rps, r.rps / direct[r.client].rps
            per_round = [f"{seg['rps'] / base['rps']:.2f}"
                         for seg, base in zip(r.segments, baseline.segments, strict=True)]
            print(f"{r.client} through nginx: {vs_wrk:.2f} x wrk straight at instance 1, "
                  f"{vs_same:.2f} x {r.client} straight at instance 1 (target >= 0.6: "
                  f"{'met' if vs_wrk >= 0.6 else 'MISSED'} against wrk, {'met' if vs_same >= 0.6 else 'MISSED'} "
                  f"against the same client); per round against wrk: {', '.join(per_round)}")
    if any(LATENCY_UNTRUSTED in (r.worst("latency_p99"), r.worst("latency_max")) for r in rows):
        print(f"{LATENCY_UNTRUSTED} wrk's latency figures broke Little's law in a round (average latency above "
              "connections / throughput), so they are not shown; hey times every request")
    failed = sum(r.total("non2xx") + r.total("socket_errors") for r in rows if r.via == "nginx")
    print(f"failed requests through nginx, all clients and the scale-down: {failed:.0f} "
          f"(target 0: {'met' if failed == 0 else 'MISSED'})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=6, help="segments per client and path (default: 6)")
    parser.add_argument("--flip", type=float, default=0.5)
    parser.add_argument("--connections", type=int, default=16)
    a = parser.parse_args()
    asyncio.run(main(a.seconds, a.rounds, a.flip, a.connections))
