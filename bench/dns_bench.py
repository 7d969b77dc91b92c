"""DNS: the DaprDockr server vs dnsmasq serving the same names from a hosts file, with dnsperf.

Both servers run on loopback on this machine in the same run and get the same query file (A
queries for every instance name and every service name of a synthetic cluster: ``--services``
services x ``--instances`` instances).  Two measurements per server:

* throughput: dnsperf with ``--clients`` sockets for ``--seconds`` seconds, unthrottled
  ("Queries per second" and lost queries), ``--rounds`` times alternating between the servers;
  the median is compared;
* latency at a fixed rate: dnsperf ``-Q 10000 -v`` for ``--seconds`` seconds; p50/p99/p99.9
  from the per-query latencies dnsperf prints.

The DaprDockr server runs exactly as the agent runs it (uvloop when installed): its own
:class:`DnsServer` plus ``--workers`` DNS worker processes on the same address (SO_REUSEPORT;
default: the agent's default, one per spare core, at most 2), all fed one :class:`ClusterState`
(the etcd watch is not what is measured).  dnsmasq is single-threaded by design; both get the
same machine, the same client and the same queries.
Targets: queries/s >= dnsmasq; p99 at 10k qps < 0.5 ms.

    .venv/bin/python bench/dns_bench.py [--seconds 10] [--clients 4] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from daprdockr.clikit.agentconfig import auto_dns_workers

SERVE = r"""
import asyncio, sys
from daprdockr.dnsserving.workers import DnsWorkerPool
from daprdockr.dnsserver import DnsServer
from daprdockr.core.model import ServiceSpec
from daprdockr.core.records import InstanceRecord
from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState
services, per, port, workers = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
specs, inst = {}, {}
for s in range(services):
    name = ServiceName(group="bench", service=f"svc{s}")
    specs[name] = ServiceSpec(name=name, image="x", instances=per, http_port=8080)
    for n in range(1, per + 1):
        inst[(name, n)] = InstanceRecord(service=name, number=n, node="n1", address=f"127.0.{s % 250}.{n}",
                                         state="running", ports=(("8080/tcp", 30000 + n),))
async def main():
    server = DnsServer(listen=("127.0.0.1", port), upstreams=[], reuse_port=workers > 0)
    await server.start()
    state = ClusterState(services=specs, instances=inst)
    server.update(state)
    if workers:
        pool = DnsWorkerPool(listen=("127.0.0.1", port), upstreams=[], count=workers)
        pool.update(state)
        await pool.start()
        server.spread_queries(members=workers + 1)
    print("ready", flush=True)
    await asyncio.Event().wait()
try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""


def names(services: int, per: int) -> list[tuple[str, list[str]]]:
    out = []
    for s in range(services):
        addrs = [f"127.0.{s % 250}.{n}" for n in range(1, per + 1)]
        out.append((f"svc{s}.bench.container", addrs))
        out.extend((f"{n}.svc{s}.bench.container", [addrs[n - 1]]) for n in range(1, per + 1))
    return out


def dnsperf(port: int, queries: Path, *, seconds: int, clients: int, qps: int | None = None) -> str:
    args = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(seconds),
            "-c", str(clients), "-q", "500", "-t", "2"]
    if qps:
        args += ["-Q", str(qps), "-v"]
    return subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30).stdout


def qps_of(out: str) -> tuple[float, float]:
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lost = float(re.search(r"Queries lost:\s+\d+ \(([\d.]+)%\)", out).group(1))  # type: ignore[union-attr]
    return qps, lost


def latencies(out: str) -> list[float]:
    return sorted(float(m.group(1)) for m in re.finditer(r"^> \w+ \S+ \S+ ([\d.]+)$", out, re.M))


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(len(values) * p))] * 1000 if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="unthrottled runs per server (median reported)")
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--workers", type=int, default=auto_dns_workers(),
                    help="DNS worker processes besides the server (default: the agent's auto value)")
    args = ap.parse_args()
    table = names(args.services, args.instances)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        queries = root / "queries.txt"
        queries.write_text("".join(f"{n} A\n" for n, _ in table))
        hosts = root / "hosts"
        hosts.write_text("".join(f"{a} {n}\n" for n, addrs in table for a in addrs))
        procs = {
            "daprdockr": subprocess.Popen([sys.executable, "-c", SERVE, str(args.services), str(args.instances),
                                           "15353", str(args.workers)], stdout=subprocess.PIPE, text=True),
            "dnsmasq": subprocess.Popen(["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}",
                                         "--port=15354", "--listen-address=127.0.0.1", "--bind-interfaces",
                                         "--cache-size=10000", "--user=root", "--local-ttl=5"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        }
        ports = {"daprdockr": 15353, "dnsmasq": 15354}
        try:
            assert procs["daprdockr"].stdout is not None
            procs["daprdockr"].stdout.readline()
            time.sleep(1.0)
            for port in ports.values():
                dnsperf(port, queries, seconds=2, clients=args.clients)  # warm-up
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in ports}
            for _ in range(args.rounds):  # alternating, so machine noise hits both alike
                for name, port in ports.items():
                    runs[name].append(qps_of(dnsperf(port, queries, seconds=args.seconds, clients=args.clients)))
            results = {}
            for name, port in ports.items():
                fixed = dnsperf(port, queries, seconds=args.seconds, clients=args.clients, qps=10000)
                qps, lost = statistics.median(q for q, _ in runs[name]), max(lo for _, lo in runs[name])
                results[name] = (qps, lost, qps_of(fixed)[0], latencies(fixed))
        finally:
            for p in procs.values():
                p.send_signal(signal.SIGTERM)
                p.wait(10)
    print(f"DNS benchmark {time.strftime('%Y-%m-%d')}: {len(table)} names (A), dnsperf -c {args.clients}, "
          f"{args.seconds}s per run, loopback; daprdockr = server + {args.workers} worker process(es), "
          f"{os.cpu_count()} CPUs")
    for name in ports:
        print(f"  {name} unthrottled runs (qps): {', '.join(f'{q:.0f}' for q, _ in runs[name])}")
    print(f"{'server':12}{'med qps':>10}{'lost %':>8}{'@10k qps':>10}{'p50 ms':>8}{'p99 ms':>8}{'p99.9 ms':>10}"
          f"{'mean ms':>9}")
    for name, (qps, lost, fixed_qps, lat) in results.items():
        print(f"{name:12}{qps:>10.0f}{lost:>8.2f}{fixed_qps:>10.0f}{pct(lat, 0.5):>8.3f}{pct(lat, 0.99):>8.3f}"
              f"{pct(lat, 0.999):>10.3f}{statistics.mean(lat) * 1000 if lat else float('nan'):>9.3f}")
    ours, theirs = results["daprdockr"], results["dnsmasq"]
    print(f"throughput target (>= dnsmasq): {'MET' if ours[0] >= theirs[0] else 'NOT MET'} "
          f"({ours[0] / theirs[0]:.2f}x); p99 at 10k qps < 0.5 ms: {'MET' if pct(ours[3], 0.99) < 0.5 else 'NOT MET'}")


if __name__ == "__main__":
    main()
