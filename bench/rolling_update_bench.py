"""Rolling updates under HTTP load: how long they take, what they drop, how fast a bad one rolls back.

A real cluster (3 etcd members, 3 agent processes with nginx and DNS) runs 9 instances of the demo
service with an HTTP health check (every 0.5 s) and keep-alive ``wrk`` load through all three
nginx.  For ``parallel`` 1 and 3 and both orders the service is updated (a new environment value,
so every container is replaced) and timed from the write until all 9 instances run the new version,
are healthy and no replacement slot is held.  Baseline, measured in the same run: the sum of 9 raw
container start times (``docker run`` until the container answers HTTP, one after another) — what
replacing 9 containers one by one costs the engine alone.  Then an update that never gets healthy
(``parallel`` 1, start-first, deadline ``--deadline``): time from the write until it is rolled back
(the old spec stored again, every instance on it and healthy, no slot held).

Targets: 0 failed requests (non-2xx + socket errors) in every case; ``parallel`` 3 faster than 1.

    .venv/bin/python bench/rolling_update_bench.py [--min-healthy 0] [--deadline 5] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from benchlib import HOST, IMAGE, WEB, new_prefix, parse_wrk, raw_round
from tests.e2e.realcluster import RealCluster, real_cluster

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.state import ClusterState

N = 9
SERVE = "echo $DAPRDOCKR_INSTANCE $DAPRDOCKR_NODE $V > /www/id; {health}exec httpd -f -p 8080 -h /www"
HEALTHY = ["sh", "-c", SERVE.format(health="touch /www/healthz; ")]
NEVER_HEALTHY = ["sh", "-c", SERVE.format(health="")]


def spec(version: str, *, parallel: int, order: str, min_healthy: float, deadline: float,
         cmd: list[str] = HEALTHY) -> ServiceSpec:
    return ServiceSpec.from_dict({
        "image": IMAGE, "instances": N, "http_host": HOST, "http_port": 8080, "cmd": cmd, "env": {"V": version},
        "health": {"http": "/healthz", "port": 8080, "interval": "0.5s", "retries": 2, "timeout": "1s"},
        "update": {"parallel": parallel, "order": order, "min_healthy": min_healthy, "deadline": deadline},
    }, name=WEB)


def settled(target: str) -> Any:
    def ok(state: ClusterState) -> bool:
        recs = [r for r in state.instances_of(WEB) if r.number <= N]
        return (len(recs) == N and all(r.routable and r.spec_hash == target for r in recs)
                and not state.slots.get(WEB))
    return ok


async def until(store: EtcdStore, ok: Any, *, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        if ok(await store.snapshot()):
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError("state not reached")
        await asyncio.sleep(0.05)


class Load:
    """keep-alive wrk through every nginx until :meth:`stop` (SIGINT makes wrk print its figures)."""

    def __init__(self, cluster: RealCluster, connections: int) -> None:
        self.cluster = cluster
        self.connections = connections
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        for agent in self.cluster.agents.values():
            a = agent.addr
            self.procs.append(await asyncio.create_subprocess_exec(
                "wrk", "-t1", f"-c{self.connections}", "-d600s", "--timeout", "10s", "-H", f"Host: {HOST}",
                f"http://{a.ip}:{a.http_port}/id", stdout=asyncio.subprocess.PIPE))
        await asyncio.sleep(1.0)

    async def stop(self) -> dict[str, int]:
        for p in self.procs:
            p.send_signal(signal.SIGINT)
        total = {"requests": 0, "failed": 0}
        for p in self.procs:
            out, _ = await p.communicate()
            figures = parse_wrk(out.decode())
            total["requests"] += int(figures["requests"])
            total["failed"] += int(figures["non2xx"]) + int(figures["socket_errors"])
        self.procs = []
        return total


async def main(min_healthy: float, deadline: float, connections: int) -> None:
    async with aiohttp.ClientSession() as session:
        raw = [(await raw_round(session, 1))[1] for _ in range(N)]
    raw_sum = sum(raw)
    print(f"baseline: {N} raw container starts (docker run until it answers), one after another: "
          f"sum {raw_sum:.2f}s (each {min(raw):.2f}..{max(raw):.2f}s)")
    prefix = new_prefix()
    rows: list[tuple[str, float, dict[str, int]]] = []
    with tempfile.TemporaryDirectory(prefix="daprdockr-bench-") as tmp, \
            real_cluster(Path(tmp), prefix=prefix, node_prefix="r") as cluster:
        await asyncio.sleep(1.5)
        async with EtcdStore(endpoints=parse_endpoints(cluster.endpoints), schema=KeySchema(prefix)) as store:
            version = 0
            first = spec("0", parallel=1, order="start-first", min_healthy=min_healthy, deadline=deadline)
            await VersionStore(store).put_service(first)
            await until(store, settled(first.runtime_hash), timeout=120)
            await asyncio.sleep(2)
            for parallel in (1, 3):
                for order in ("start-first", "stop-first"):
                    version += 1
                    # the policy first (no rollout: the containers stay), then the change under load
                    await VersionStore(store).put_service(spec(str(version - 1), parallel=parallel, order=order,
                                                 min_healthy=min_healthy, deadline=deadline))
                    new = spec(str(version), parallel=parallel, order=order, min_healthy=min_healthy,
                               deadline=deadline)
                    load = Load(cluster, connections)
                    await load.start()
                    t0 = time.monotonic()
                    await VersionStore(store).put_service(new)
                    took = await until(store, settled(new.runtime_hash), timeout=300) - t0
                    await asyncio.sleep(1.0)
                    rows.append((f"parallel {parallel}, {order}", took, await load.stop()))
                    await asyncio.sleep(3)  # the last drains end
            good = spec(str(version), parallel=1, order="start-first", min_healthy=min_healthy, deadline=deadline)
            await VersionStore(store).put_service(good)
            bad = spec(str(version + 1), parallel=1, order="start-first", min_healthy=min_healthy,
                       deadline=deadline, cmd=NEVER_HEALTHY)
            load = Load(cluster, connections)
            await load.start()
            t0 = time.monotonic()
            await VersionStore(store).put_service(bad)

            def rolled_back(state: ClusterState) -> bool:
                rollout = state.rollouts.get(WEB)
                return (rollout is not None and rollout.state == "rolled-back"
                        and state.services[WEB].runtime_hash == good.runtime_hash
                        and settled(good.runtime_hash)(state))

            back = await until(store, rolled_back, timeout=120) - t0
            await asyncio.sleep(1.0)
            bad_load = await load.stop()

    print(f"\n{N} instances on 3 agents, health check every 0.5 s, min_healthy {min_healthy:g}s, "
          f"keep-alive wrk ({connections} connections) through each of the 3 nginx")
    print(f"{'update':<26}{'duration':>10}{'raw sum':>10}{'ratio':>8}{'requests':>10}{'failed':>8}")
    for name, took, load_figures in rows:
        print(f"{name:<26}{took:>9.2f}s{raw_sum:>9.2f}s{took / raw_sum:>7.2f}x"
              f"{load_figures['requests']:>10}{load_figures['failed']:>8}")
    print(f"\nbad update (never healthy; deadline {deadline:g}s): rolled back {back:.2f}s after the write "
          f"({back - deadline:.2f}s beyond the deadline); {bad_load['requests']} requests, "
          f"{bad_load['failed']} failed")
    failed = sum(r[2]["failed"] for r in rows) + bad_load["failed"]
    faster = dict((r[0], r[1]) for r in rows)
    print(f"targets: 0 failed requests: {'met' if failed == 0 else f'MISSED ({failed})'}; "
          f"parallel 3 faster than 1: "
          f"{'met' if faster['parallel 3, start-first'] < faster['parallel 1, start-first'] else 'MISSED'}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--min-healthy", type=float, default=0.0)
    ap.add_argument("--deadline", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()
    asyncio.run(main(args.min_healthy, args.deadline, args.connections))
