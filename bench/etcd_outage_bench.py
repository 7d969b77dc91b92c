"""etcd quorum loss under HTTP load: recovery time, failed requests, restarted containers.

3 etcd members, 3 agents with the default 5 s lease TTL, one service of 9 instances, steady HTTP
load through two agents' nginx (:class:`tests.e2e.probes.HttpLoad`: two sequential clients; a
failed request is retried on the other nginx for up to 10 s, and what a client without retries
would have seen is counted too).  Each round:

1. baseline: ``--seconds`` of the same load with etcd healthy (same run, same cluster);
2. outage: 2 of the 3 members stopped (``stop``) or frozen with SIGSTOP (``hang``) for
   ``--seconds``, then started again (SIGCONT); "quorum back" is the first moment a write through
   etcdctl succeeds again;
3. recovery: time from quorum back until etcd shows every node registered and every instance
   ``running`` on the lease of the node that holds it (target: TTL + 2 s), failed requests
   during the outage and recovery (target: 0 for the retrying client), and containers restarted
   or replaced by the agents across the round (target: 0; ``docker ps`` ids before and after).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
import time
from pathlib import Path

from benchlib import HOST, WEB, new_prefix, running_numbers, wait_state, web_spec
from tests.e2e.probes import HttpLoad, docker_containers
from tests.e2e.realcluster import RealCluster, real_cluster

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.state import ClusterState

INSTANCES = 9
TTL = 5.0


def recovered(cluster: RealCluster) -> object:
    want = set(range(1, INSTANCES + 1))

    def check(s: ClusterState) -> bool:
        return set(s.nodes) == set(cluster.node_ids) and running_numbers(s) == want and all(
            r.node in s.nodes and r.lease == s.nodes[r.node].lease for r in s.instances_of(WEB))

    return check


async def load_for(cluster: RealCluster, seconds: float) -> HttpLoad:
    load = HttpLoad(targets=[(a.addr.ip, a.addr.http_port) for a in list(cluster.agents.values())[:2]], host=HOST)
    stop = asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    return load


async def outage_round(cluster: RealCluster, store: EtcdStore, *, how: str, seconds: float) -> dict[str, float]:
    await wait_state(store, recovered(cluster), timeout=60)  # type: ignore[arg-type]
    baseline = await load_for(cluster, seconds)
    before = {(c.number, c.container_id)
              for c in docker_containers(cluster.node_ids, service=WEB.service, group=WEB.group)}
    load = HttpLoad(targets=[(a.addr.ip, a.addr.http_port) for a in list(cluster.agents.values())[:2]], host=HOST)
    stop = asyncio.Event()
    load_task = asyncio.create_task(load.run(stop))
    victims = cluster.etcd.members[:2]
    for m in victims:
        if how == "stop":
            cluster.etcd.stop_member(m)
        else:
            assert m.proc is not None
            os.kill(m.proc.pid, signal.SIGSTOP)
    await asyncio.sleep(seconds)
    for m in victims:
        if how == "stop":
            cluster.etcd.start_member(m, new=False)
        else:
            assert m.proc is not None
            os.kill(m.proc.pid, signal.SIGCONT)
    resumed = time.monotonic()
    await asyncio.to_thread(cluster.etcd.wait_healthy)
    back = time.monotonic()
    done = await wait_state(store, recovered(cluster), timeout=60)  # type: ignore[arg-type]
    await asyncio.sleep(2)  # requests a moment past recovery count too
    stop.set()
    await load_task
    after = {(c.number, c.container_id)
             for c in docker_containers(cluster.node_ids, service=WEB.service, group=WEB.group)}
    print(f"  baseline ({seconds:g}s, etcd healthy): {baseline.summary()}", flush=True)
    print(f"  outage ({how}, {seconds:g}s) + recovery: {load.summary()}", flush=True)
    return {
        "recovery": done - back, "election": back - resumed, "failed": load.failed,
        "first_try": load.first_try_failures, "requests": load.requests, "restarted": len(before - after),
        "base_failed": baseline.failed, "base_first_try": baseline.first_try_failures,
        "base_requests": baseline.requests,
    }


async def main(seconds: float, rounds: int) -> None:
    prefix = new_prefix()
    rows = []
    with tempfile.TemporaryDirectory(prefix="daprdockr-bench-") as tmp, \
            real_cluster(Path(tmp), prefix=prefix, node_prefix="o") as cluster:
        await asyncio.sleep(1.5)
        async with EtcdStore(endpoints=parse_endpoints(cluster.endpoints), schema=KeySchema(prefix)) as store:
            await VersionStore(store).put_service(web_spec(INSTANCES))
            for i in range(rounds):
                for how in ("stop", "hang"):
                    print(f"round {i + 1}, quorum loss by {how}:", flush=True)
                    r = await outage_round(cluster, store, how=how, seconds=seconds)
                    rows.append((how, r))
                    print(f"  quorum back -> all registered and running in {r['recovery']:.2f}s; "
                          f"{r['restarted']} containers restarted", flush=True)
    print()
    print(f"| quorum loss | outage | members back -> quorum | recovery (target ≤ TTL + 2 = {TTL + 2:.0f} s) "
          "| failed, retrying client (baseline) | failed on first try (baseline) | requests (baseline) "
          "| containers restarted |")
    print("|---|---|---|---|---|---|---|---|")
    for how, r in rows:
        print(f"| {how} | {seconds:g} s | {r['election']:.2f} s "
              f"| {r['recovery']:.2f} s {'met' if r['recovery'] <= TTL + 2 else 'MISSED'} "
              f"| {r['failed']:.0f} ({r['base_failed']:.0f}) | {r['first_try']:.0f} ({r['base_first_try']:.0f}) "
              f"| {r['requests']:.0f} ({r['base_requests']:.0f}) | {r['restarted']:.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="outage length (and baseline length)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.rounds))
