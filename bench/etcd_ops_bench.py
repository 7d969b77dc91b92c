"""etcd load and agent footprint: writes per started instance, writes and keepalives per idle
minute, agent RSS and idle CPU.

3 etcd members, 3 agents (default 5 s TTL).  Two independent counts of etcd writes:

* a watch over the whole prefix, classifying every event by key kind (service / instance /
  node) and type (put / delete): each event is one write (one revision);
* etcd's own ``/metrics`` (``etcd_debugging_mvcc_current_revision``, ``etcd_mvcc_put_total``,
  ``etcd_mvcc_txn_total``, ``etcd_debugging_lease_renewed_total``) before and after.

Lease keepalives are not writes (they create no revision); they are counted separately from
``etcd_debugging_lease_renewed_total`` (summed over members; only the leader counts them).
Agent RSS comes from ``/proc/<pid>/status`` (VmRSS), idle CPU from ``/proc/<pid>/stat``
(utime + stime over the idle window), the same for the agent's DNS worker processes, nginx RSS
from its master and workers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

from benchlib import WEB, new_prefix, running_numbers, wait_state, web_spec
from tests.e2e.realcluster import RealCluster, real_cluster

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema

METRICS = (
    "etcd_debugging_mvcc_current_revision", "etcd_mvcc_put_total", "etcd_mvcc_txn_total",
    "etcd_mvcc_delete_total", "etcd_debugging_lease_renewed_total",
)


def scrape(url: str) -> dict[str, float]:
    """The METRICS values of one member (only loopback URLs are scraped)."""
    assert url.startswith("http://127."), url
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in METRICS:
            values[name] = float(value)
    return values


def cluster_metrics(cluster: RealCluster) -> dict[str, float]:
    """Revision: max over members; counters of the leader-only kind: summed; others: member 0."""
    per_member = [scrape(m.client_url) for m in cluster.etcd.members]
    first = per_member[0]
    return {
        "revision": max(m.get("etcd_debugging_mvcc_current_revision", 0) for m in per_member),
        "puts": first.get("etcd_mvcc_put_total", 0),
        "txns": first.get("etcd_mvcc_txn_total", 0),
        "deletes": first.get("etcd_mvcc_delete_total", 0),
        "renewals": sum(m.get("etcd_debugging_lease_renewed_total", 0) for m in per_member),
    }


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


class EventCounter:
    """Counts watch events under the prefix by (key kind, event type)."""

    def __init__(self, store: EtcdStore) -> None:
        self.store = store
        self.counts: Counter[str] = Counter()

    def take(self) -> Counter[str]:
        counts, self.counts = self.counts, Counter()
        return counts

    async def run(self, start_revision: int) -> None:
        async for ev in self.store.watch(start_revision=start_revision):
            parsed = self.store.schema.parse(ev.key)
            if ev.kind != "resync":
                self.counts[f"{parsed.kind if parsed else 'other'} {ev.kind}"] += 1


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def fmt_counts(counts: Counter[str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"


async def main(instances: int, idle: float) -> None:
    prefix = new_prefix()
    with tempfile.TemporaryDirectory(prefix="daprdockr-bench-") as tmp, \
            real_cluster(Path(tmp), prefix=prefix, node_prefix="o") as cluster:
        await asyncio.sleep(2.0)
        async with EtcdStore(endpoints=parse_endpoints(cluster.endpoints), schema=KeySchema(prefix)) as store:
            counter = EventCounter(store)
            watch = asyncio.create_task(counter.run((await store.snapshot()).revision + 1))
            await asyncio.sleep(0.5)
            counter.take()

            # ---- start N instances
            before = cluster_metrics(cluster)
            await VersionStore(store).put_service(web_spec(instances))
            await wait_state(store, lambda s: running_numbers(s) == set(range(1, instances + 1)), timeout=120)
            await asyncio.sleep(3.0)  # trailing node-record updates (next heartbeat)
            start_counts, start_metrics = counter.take(), delta(cluster_metrics(cluster), before)

            # ---- idle window
            pids = {n: a.pid for n, a in cluster.agents.items()}
            nginx = {n: a.nginx_master_pid() for n, a in cluster.agents.items()}
            cpu0 = {n: cpu_seconds(p) for n, p in pids.items()}
            workers = {n: [c for c in children(p) if b"dnsworker" in Path(f"/proc/{c}/cmdline").read_bytes()]
                       for n, p in pids.items()}
            wcpu0 = {n: sum(cpu_seconds(c) for c in cs) for n, cs in workers.items()}
            before = cluster_metrics(cluster)
            t0 = time.monotonic()
            await asyncio.sleep(idle)
            elapsed = time.monotonic() - t0
            idle_counts, idle_metrics = counter.take(), delta(cluster_metrics(cluster), before)
            cpu = {n: (cpu_seconds(p) - cpu0[n]) / elapsed * 100 for n, p in pids.items()}
            rss = {n: rss_kib(p) for n, p in pids.items()}
            worker_rss = {n: sum(rss_kib(c) for c in cs) for n, cs in workers.items()}
            worker_cpu = {n: (sum(cpu_seconds(c) for c in cs) - wcpu0[n]) / elapsed * 100
                          for n, cs in workers.items()}
            nginx_rss = {
                n: (rss_kib(p) + sum(rss_kib(c) for c in children(p))) if p else 0 for n, p in nginx.items()
            }
            # baselines from the same run: the other daemons every host runs anyway
            etcd_rss = [rss_kib(m.proc.pid) for m in cluster.etcd.members if m.proc is not None]
            dockerd = Path("/var/run/docker.pid")
            dockerd_rss = rss_kib(int(dockerd.read_text())) if dockerd.exists() else 0

            # ---- delete
            before = cluster_metrics(cluster)
            await VersionStore(store).delete_service(WEB)
            await wait_state(store, lambda s: not s.instances_of(WEB), timeout=60)
            await asyncio.sleep(3.0)
            del_counts, del_metrics = counter.take(), delta(cluster_metrics(cluster), before)
            watch.cancel()

    per_minute = 60 / elapsed
    inst_writes = sum(v for k, v in start_counts.items() if k.startswith("instance"))
    print(f"start {instances} instances: watch events {fmt_counts(start_counts)}")
    print(f"  metrics: revisions +{start_metrics['revision']:.0f}, puts +{start_metrics['puts']:.0f}, "
          f"txns +{start_metrics['txns']:.0f}")
    print(f"idle {elapsed:.0f}s: watch events {fmt_counts(idle_counts)}; revisions "
          f"+{idle_metrics['revision']:.0f}; lease renewals +{idle_metrics['renewals']:.0f}")
    print(f"delete: watch events {fmt_counts(del_counts)}; revisions +{del_metrics['revision']:.0f}")
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| etcd writes per started instance (instance keys) | {inst_writes / instances:.2f} |")
    print(f"| etcd writes per started instance (all keys, incl. spec and node records) | "
          f"{start_metrics['revision'] / instances:.2f} |")
    print(f"| etcd writes per stopped instance (all keys) | {del_metrics['revision'] / instances:.2f} |")
    print(f"| etcd writes per idle minute, 3 agents | {idle_metrics['revision'] * per_minute:.1f} |")
    print(f"| lease keepalives per idle minute, 3 agents | {idle_metrics['renewals'] * per_minute:.0f} |")
    print(f"| agent RSS (MiB) | {' / '.join(f'{rss[n] / 1024:.0f}' for n in sorted(rss))} |")
    print(f"| agent idle CPU (% of one core) | {' / '.join(f'{cpu[n]:.2f}' for n in sorted(cpu))} |")
    print(f"| DNS worker processes per agent, RSS (MiB) | "
          f"{' / '.join(f'{len(workers[n])}: {worker_rss[n] / 1024:.0f}' for n in sorted(workers))} |")
    print(f"| DNS workers' idle CPU (% of one core) | "
          f"{' / '.join(f'{worker_cpu[n]:.2f}' for n in sorted(workers))} |")
    print(f"| nginx RSS, master + workers (MiB) | "
          f"{' / '.join(f'{nginx_rss[n] / 1024:.0f}' for n in sorted(nginx_rss))} |")
    print(f"| baseline: etcd member RSS (MiB) | {' / '.join(f'{r / 1024:.0f}' for r in etcd_rss)} |")
    print(f"| baseline: dockerd RSS (MiB) | {dockerd_rss / 1024:.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement")
    args = parser.parse_args()
    asyncio.run(main(args.instances, args.idle))
