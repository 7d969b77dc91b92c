"""Convergence: how long from ``daprdockr svc set`` (N instances) until they all run and are all
routable, against starting the same containers with plain parallel ``docker run``.

DaprDockr side (3 etcd members, 3 agents, real CLI, default 5 s TTL):

* *running*  = from launching ``daprdockr svc set ... --instances N`` until etcd shows N
  instances in state ``running`` (containers started, their programs listening, records
  written), seen by an etcd watch in the benchmark;
* *routed*   = from the same moment until every agent's nginx routing table (the Lua shared dict,
  read through each agent's control socket every 5 ms, before any HTTP probing) routes the
  service's host to all N;
* *answered* = from the same moment until HTTP through one agent's nginx (``Host`` header) has
  been answered by all N distinct containers.  The HTTP probe starts once etcd shows all N
  running and the tables route them (nginx only routes running instances), as the baseline
  probes only after every ``docker run`` returned;
* *probe floor* = right after, the same HTTP probe again on the same instances (now all
  routable): the part of *answered - running* that is the probe's own time (batches of 2N
  requests through nginx to busybox httpd, which forks per connection), not DaprDockr's.

Baseline, same run, same image and command: N parallel ``docker run -d --init -p
127.0.0.1::8080`` (*running* = every ``docker run`` returned) and then polling every container's
published port until all answer HTTP (*answering*, includes one ``docker inspect`` for the
ports).  Targets: running ≤ 1.15 x raw + 0.5 s, answered ≤ 1.15 x raw answering + 1 s,
routed ≤ running + 0.1 s (*answered - running* is printed beside it, with the probe's floor).
Medians over ``--repeats`` rounds, raw and DaprDockr alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
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
    wait_routed,
    wait_state,
)
from tests.e2e.probes import IDENTITY_CMD, docker_containers
from tests.e2e.realcluster import RealCluster, real_cluster

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.informer import Informer
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema


@dataclass(frozen=True, kw_only=True)
class Round:
    """Seconds from ``svc set`` until: etcd shows all N running; every agent's nginx routing table
    routes to all N; HTTP through one nginx was answered by all N; and the HTTP probe's floor."""

    running: float
    routed: float
    answered: float
    floor: float


async def daprdockr_round(
    cluster: RealCluster, store: EtcdStore, session: aiohttp.ClientSession, n: int
) -> Round:
    """``svc set`` through the CLI, observed by an etcd watch (running), every agent's routing
    table (routed) and HTTP through one agent's nginx (answered, and the probe's floor)."""
    want = set(range(1, n + 1))
    entry = cluster.agents[cluster.node_ids[0]].addr
    sockets = [agent.nginx_dir() / "control.sock" for agent in cluster.agents.values()]
    informer = Informer(store=store)
    follow = asyncio.create_task(informer.run())
    await informer.wait_for(lambda s: True, within=30)
    t0 = time.monotonic()
    cli = asyncio.create_task(asyncio.to_thread(
        cluster.cli, "svc", "set", str(WEB), "--image", IMAGE, "--instances", str(n), "--http-host", HOST,
        "--http-port", "8080", *(f"--cmd={a}" for a in IDENTITY_CMD),
    ))
    routed = asyncio.create_task(wait_routed(sockets, host=HOST, peers=n, timeout=180))
    if not await informer.wait_for(lambda s: running_numbers(s) == want, within=180, poll=1.0):
        raise TimeoutError(f"not all {n} running in etcd within 180s")
    t_running = time.monotonic()
    follow.cancel()
    await asyncio.gather(follow, return_exceptions=True)
    # HTTP probing starts once etcd shows all N running and every table routes them (nginx
    # routes only running instances, so all N cannot be routable earlier), like the raw
    # baseline, which probes only after every ``docker run`` returned: the probe's load must
    # compete neither with the starts nor with the reads of the tables.
    async def all_answered(timeout: float) -> float:
        """The probe: the time of the answer that completed the set of N instances."""
        return await wait_identities(
            session, ip=entry.ip, port=entry.http_port, timeout=timeout, batch=max(24, 2 * n),
            done=lambda seen: {int(i.split()[0]) for i in seen} >= want,
        )

    # the routing tables first: the HTTP probe's burst would delay the control socket's answers
    t_routed = await routed
    t_answered = await all_answered(180)
    # the probe's own floor: the same probe on the same instances, now all routable
    t_floor = time.monotonic()
    floor = await all_answered(30) - t_floor
    await cli
    result = Round(running=t_running - t0, routed=t_routed - t0, answered=t_answered - t0, floor=floor)
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
                raws: list[tuple[float, float]] = []
                rounds: list[Round] = []
                for i in range(repeats):
                    r = await raw_round(session, n)
                    d = await daprdockr_round(cluster, store, session, n)
                    raws.append(r)
                    rounds.append(d)
                    print(f"N={n} round {i + 1}: raw started {r[0]:.2f}s answering {r[1]:.2f}s | daprdockr "
                          f"running {d.running:.2f}s routed {d.routed:.2f}s answered {d.answered:.2f}s "
                          f"(probe floor {d.floor:.3f}s)", flush=True)
                rows.append((n, raws, rounds))
    print()
    print("| N | raw `docker run` started | DaprDockr running | target (1.15xraw+0.5 s) "
          "| raw answering HTTP | DaprDockr answering via nginx | target (1.15xraw+1 s) |")
    print("|---|---|---|---|---|---|---|")
    for n, raws, rounds in rows:
        rs, rh = median([r[0] for r in raws]), median([r[1] for r in raws])
        dr, dh = median([d.running for d in rounds]), median([d.answered for d in rounds])
        t_run, t_route = 1.15 * rs + 0.5, 1.15 * rh + 1.0
        print(f"| {n} | {rs:.2f} s | {dr:.2f} s | {t_run:.2f} s {'met' if dr <= t_run else 'MISSED'} "
              f"| {rh:.2f} s | {dh:.2f} s | {t_route:.2f} s {'met' if dh <= t_route else 'MISSED'} |")
    print()
    for n, _, rounds in rows:
        routed = [d.routed - d.running for d in rounds]
        answered = [d.answered - d.running for d in rounds]
        lag = median(routed)
        print(f"N={n}: routed - running (every agent's routing table), median {lag:.3f} s (target <= 0.1 s: "
              f"{'met' if lag <= 0.1 else 'MISSED'}), worst round {max(routed):.3f} s; "
              f"answered via nginx - running, median {median(answered):.3f} s, worst {max(answered):.3f} s, "
              f"of which the HTTP probe's own floor (all routable), median {median([d.floor for d in rounds]):.3f} s")
    print(f"\nmedians of {repeats} rounds; 3 etcd members + 3 agents on one 2-core machine")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,50", help="comma list of instance counts")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main([int(x) for x in args.sizes.split(",")], args.repeats))
