"""Frozen instances through the managed nginx: round robin beside the least-request balancer.

A real cluster (3 etcd members, 3 agent processes with nginx and DNS, 5 s TTL) runs 6 instances
of the demo service (busybox httpd in real containers).  For each balancer (the service's
``proxy.balancer``, switched with a spec write between the runs, no reload) and for 1 and 2
frozen instances: ``wrk`` keep-alive (``--connections``) through one agent's nginx for
``--seconds`` before the freeze (the baseline, same client, same path, same run), then for
``--seconds`` while the processes of the first N containers are stopped (SIGSTOP: the kernel still
accepts their connections, nothing answers); then ``hey`` at 500 requests/s with a freeze of the
same N containers (``--seconds`` long) in the middle of its run, counting its requests that took
over 1 s (each holds a client connection for the whole freeze).  wrk gives up on a request after
30 s.

Targets: 0 failed requests, throughput during the freeze >= 0.8 x before it, at most 4 requests
per frozen instance over 1 s.

    .venv/bin/python bench/slow_peer_bench.py [--seconds 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from benchlib import HOST, WEB, new_prefix, running_numbers, wait_state, web_spec
from tests.e2e.realcluster import real_cluster
from tests.support.loadrun import container_pids, freeze, hey_through_freeze, wrk

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.proxypolicy import Balancer, ProxyPolicy


@dataclass(frozen=True)
class Row:
    balancer: str
    frozen: int
    before: float
    during: float
    failed: int
    slow: int  # hey's requests over 1 s
    hey_failed: int


def containers(numbers: range) -> list[str]:
    ids = []
    for n in numbers:
        out = subprocess.run(["docker", "ps", "--no-trunc", "--filter", f"label=daprdockr.group={WEB.group}",
                              "--filter", f"label=daprdockr.service={WEB.service}",
                              "--filter", f"label=daprdockr.instance={n}", "--format", "{{.ID}}"],
                             capture_output=True, text=True, check=True).stdout.split()
        ids += out
    return ids


async def one(url: str, *, balancer: str, frozen: int, seconds: float, connections: int) -> Row:
    victims = [pid for cid in containers(range(1, frozen + 1)) for pid in container_pids(cid)]
    before = await wrk(url, host=HOST, seconds=seconds, connections=connections)
    freeze(victims)
    try:
        during = await wrk(url, host=HOST, seconds=seconds, connections=connections)
    finally:
        freeze(victims, thaw=True)
    await asyncio.sleep(1.0)
    run = await hey_through_freeze(url, host=HOST, victims=victims, connections=connections, freeze_for=seconds,
                                   requests=int(500 * (seconds + 2)), qps=500)
    await asyncio.sleep(1.0)
    return Row(balancer=balancer, frozen=frozen, before=before.rps, during=during.rps,
               failed=before.failed + during.failed, slow=run.slower_than(1.0), hey_failed=run.failed)


async def main(seconds: float, connections: int) -> None:
    prefix = new_prefix()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="daprdockr-bench-") as tmp, \
            real_cluster(Path(tmp), prefix=prefix, node_prefix="s") as cluster:
        async with EtcdStore(endpoints=parse_endpoints(cluster.endpoints), schema=KeySchema(prefix)) as store:
            edge = next(iter(cluster.agents.values())).addr
            url = f"http://{edge.ip}:{edge.http_port}/id"
            balancers: tuple[Balancer, ...] = ("round-robin", "least-request")
            for balancer in balancers:
                await VersionStore(store).put_service(replace(web_spec(6), proxy=ProxyPolicy(balancer=balancer)))
                await wait_state(store, lambda s: running_numbers(s) == set(range(1, 7)), timeout=90)
                await asyncio.sleep(2.0)
                for frozen in (1, 2):
                    rows.append(await one(url, balancer=balancer, frozen=frozen, seconds=seconds,
                                          connections=connections))
    print(f"# slow_peer_bench {datetime.now():%Y-%m-%d %H:%M}: 6 instances, 3 agents, wrk -c{connections} "
          f"{seconds:g} s before / during; hey 500 req/s with a {seconds:g} s freeze")
    print(f"{'balancer':<14} {'frozen':>6} {'before rps':>11} {'during rps':>11} {'ratio':>6} {'failed':>7} "
          f"{'hey >1s':>8} {'hey failed':>10}")
    for r in rows:
        print(f"{r.balancer:<14} {r.frozen:>6} {r.before:>11.0f} {r.during:>11.0f} {r.during / r.before:>6.2f} "
              f"{r.failed:>7} {r.slow:>8} {r.hey_failed:>10}")
    print("targets (least-request): ratio >= 0.80, failed 0, hey >1s <= 4 per frozen instance")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.connections))
