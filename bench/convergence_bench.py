"""Convergence: how long from ``daprdockr svc set`` (N instances) until they all run and are all
routable, against starting the same containers with plain parallel ``docker run``.

DaprDockr side (3 etcd members, 3 agents, real CLI, default 5 s TTL):

* *running*  = from launching ``daprdockr svc set ... --instances N`` until etcd shows N
  instances in state ``running`` (containers started, ports published, records written);
* *routable* = from the same moment until HTTP through one agent's nginx (``Host`` header) has
  been answered by all N distinct containers.  The HTTP probe starts when etcd shows all N
  running (nginx only routes running instances), as the baseline probes only after every
  ``docker run`` returned; etcd is polled every 50 ms throughout.
* *probe floor* = right after, the same probe again on the same instances (now all routable):
  the part of *routable - running* that is the probe's own time (batches of 2N requests
  through nginx to busybox httpd), not DaprDockr's.

Baseline, same run, same image and command: N parallel ``docker run -d --init -p
127.0.0.1::8080`` (*running* = every ``docker run`` returned) and then polling every container's
published port until all answer HTTP (*answering*, includes one ``docker inspect`` for the
ports).  Targets: running ≤ 1.15 x raw + 0.5 s, routable ≤ 1.15 x raw answering + 1 s,
routable ≤ running + 0.1 s.
Medians over ``--repeats`` rounds, raw and DaprDockr alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
from benchlib import (
    HOST,
    IMAGE,
    WEB,
    median,
    new_prefix,
    raw_round,
    running_numbers,
    wait_identities,
    wait_state,
)
from tests.e2e.probes import IDENTITY_CMD, docker_containers
from tests.e2e.realcluster import RealCluster, real_cluster

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema


async def daprdockr_round(
    cluster: RealCluster, store: EtcdStore, session: aiohttp.ClientSession, n: int
) -> tuple[float, float, float]:
    """``svc set`` through the CLI: (seconds until all running in etcd, until all routable, and
    the probe's floor: how long the same probe takes to see every instance once all are routable)."""
    want = set(range(1, n + 1))
    entry = cluster.agents[cluster.node_ids[0]].addr
    t0 = time.monotonic()
    cli = asyncio.create_task(asyncio.to_thread(
        cluster.cli, "svc", "set", str(WEB), "--image", IMAGE, "--instances", str(n), "--http-host", HOST,
        "--http-port", "8080", *(f"--cmd={a}" for a in IDENTITY_CMD),
    ))
    t_running = await wait_state(store, lambda s: running_numbers(s) == want, timeout=180)
    # HTTP probing starts once etcd shows all N running (nginx routes only running instances,
    # so all N cannot be routable earlier), like the raw baseline, which probes only after
    # every ``docker run`` returned: the probe's load must not compete with the starts.
    async def all_answered(timeout: float) -> float:
        """The probe: the time of the answer that completed the set of N instances."""
        return await wait_identities(
            session, ip=entry.ip, port=entry.http_port, timeout=timeout, batch=max(24, 2 * n),
            done=lambda seen: {int(i.split()[0]) for i in seen} >= want,
        )

    t_routable = await all_answered(180)
    # the probe's own floor: the same probe on the same instances, now all routable
    t_floor = time.monotonic()
    floor = await all_answered(30) - t_floor
    await cli
    result = (t_running - t0, t_routable - t0, floor)
    cluster.cli("svc", "del", str(WEB))
    await wait_state(store, lambda s: not s.instances_of(WEB), timeout=60)
    while docker_containers(cluster.node_ids, service=WEB.service, group=WEB.group):
        await asyncio.sleep(0.2)
    return result


async def main(sizes: list[int], repeats: int) -> None:
    prefix = new_prefix()
    with tempfile.TemporaryDirectory(prefix="daprdockr-bench-") as tmp, \
            real_cluster(Path(tmp), prefix=prefix, node_prefix="b") as cluster:
        await asyncio.sleep(1.5)
        async with EtcdStore(endpoints=parse_endpoints(cluster.endpoints), schema=KeySchema(prefix)) as store, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            rows = []
            for n in sizes:
                raw_s, raw_h, dd_r, dd_h, floors = [], [], [], [], []
                for i in range(repeats):
                    r = await raw_round(session, n)
                    d = await daprdockr_round(cluster, store, session, n)
                    raw_s.append(r[0])
                    raw_h.append(r[1])
                    dd_r.append(d[0])
                    dd_h.append(d[1])
                    floors.append(d[2])
                    print(f"N={n} round {i + 1}: raw started {r[0]:.2f}s answering {r[1]:.2f}s | "
                          f"daprdockr running {d[0]:.2f}s routable {d[1]:.2f}s (probe floor {d[2]:.3f}s)", flush=True)
                lags = [h - r for r, h in zip(dd_r, dd_h, strict=True)]
                rows.append((n, median(raw_s), median(dd_r), median(raw_h), median(dd_h), median(lags), max(lags),
                             median(floors)))
    print()
    print("| N | raw `docker run` started | DaprDockr running | target (1.15xraw+0.5 s) "
          "| raw answering HTTP | DaprDockr routable via nginx | target (1.15xraw+1 s) |")
    print("|---|---|---|---|---|---|---|")
    for n, rs, dr, rh, dh, *_ in rows:
        t_run, t_route = 1.15 * rs + 0.5, 1.15 * rh + 1.0
        print(f"| {n} | {rs:.2f} s | {dr:.2f} s | {t_run:.2f} s {'met' if dr <= t_run else 'MISSED'} "
              f"| {rh:.2f} s | {dh:.2f} s | {t_route:.2f} s {'met' if dh <= t_route else 'MISSED'} |")
    print()
    for n, *_, lag, worst, floor in rows:
        print(f"N={n}: routable - running, median {lag:.3f} s (target <= 0.1 s: {'met' if lag <= 0.1 else 'MISSED'}), "
              f"worst round {worst:.3f} s; the probe's own floor (all routable), median {floor:.3f} s")
    print(f"\nmedians of {repeats} rounds; 3 etcd members + 3 agents on one 2-core machine")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,50", help="comma list of instance counts")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main([int(x) for x in args.sizes.split(",")], args.repeats))
