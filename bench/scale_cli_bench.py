"""The CLI's views and the agent's full load against a real etcd holding 1 000 and 100 000 instances.

One etcd member (Debian's etcd-server) on loopback.  For each size, under its own prefix: 100
node records on 100 leases, ``size / 100`` services (specs with env and labels, one history
entry each) and their instance records (written in transactions of 100 puts).  Then, timed
(median of ``--runs``):

* ``daprdockr svc ls``, ``daprdockr status`` and ``daprdockr ps SERVICE`` as the operator runs
  them (a new Python process each: start-up included).  ``svc ls`` and ``status`` ask the agent on
  this host for its rows (one hollow agent, drained so that it takes nothing, started on the
  cluster; ``clikit/cluster_rows.py``) and, as their baseline, read every key themselves
  (``--from-etcd``: what they always did before);
* the agent's full load: the informer's paged read of the whole prefix and the mirror's reset
  (what an agent does at start and on every resync).

The baseline is the same command at 1 000 instances in the same run, and as the floor etcd's own
client (``etcdctl get --prefix``, values to /dev/null) reading the same keys.  Targets: ``svc ls`` and
``status`` at 100 000 <= 2 s, ``ps SERVICE`` independent of the cluster's size, full load of
100 000 <= 3 s.

    .venv/bin/python bench/scale_cli_bench.py [--sizes 1000,100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import benchlib  # noqa: F401  (puts the repository on sys.path, for tests.support)
from scale_bench import NODES, PER_SERVICE, cluster
from tests.support.procs import etcd_cluster, free_port, terminate

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.informer import Informer
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema


async def fill(endpoints: str, prefix: str, size: int) -> str:
    """Write the cluster of ``size`` instances under ``prefix``; returns one service's name."""
    schema = KeySchema(prefix)
    src = KeySchema("/daprdockr")
    kvs, specs = cluster(size)
    async with EtcdStore(endpoints=parse_endpoints(endpoints), schema=schema, timeout=30.0) as store:
        leases = {1000 + n: await store.grant_lease(3600) for n in range(NODES)}
        ops = [(prefix + kv.key[len(src.prefix):], kv.value, leases.get(kv.lease, 0)) for kv in kvs]
        for i in range(0, len(ops), 100):
            await store.transaction(compares=[], ops=ops[i:i + 100], what="fill")
    return str(specs[0].name)


AGENT = "cli-bench"


@contextlib.contextmanager
def drained_agent(endpoints: str, prefix: str, tmp: Path) -> Iterator[str]:
    """A hollow agent on the cluster under ``prefix``, marked draining first (it takes nothing);
    yields its API address once its mirror has loaded everything."""
    async def drain() -> None:
        async with EtcdStore(endpoints=parse_endpoints(endpoints), schema=KeySchema(prefix), timeout=30.0) as s:
            await s.put_raw(KeySchema(prefix).drain(AGENT), b"{}")

    asyncio.run(drain())
    api = f"127.0.0.1:{free_port()}"
    with open(tmp / f"agent{prefix.replace('/', '-')}.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daprdockr", "agent", "--runtime", "hollow", "--node-id", AGENT,
             "--advertise-ip", "127.0.0.1", "--dns-listen", "off", "--http-listen", "off", "--api-listen", api,
             "--rebalance", "off", "--state-dir", str(tmp)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "DAPRDOCKR_ETCD": endpoints,
                                                       "DAPRDOCKR_PREFIX": prefix})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the agent exited: see {tmp}"
            with contextlib.suppress(OSError, ValueError), \
                    urllib.request.urlopen(f"http://{api}/v1/cluster", timeout=5) as resp:
                if json.load(resp)["nodes"]:
                    break
            time.sleep(0.5)
        else:
            raise AssertionError("the agent's API did not answer within 120 s")
        yield api
    finally:
        proc.terminate()
        terminate(proc, grace=15)


def cli(endpoints: str, prefix: str, *args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "daprdockr", "--etcd", endpoints, "--prefix", prefix, *args],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


async def full_load(endpoints: str, prefix: str) -> tuple[float, int]:
    async with EtcdStore(endpoints=parse_endpoints(endpoints), schema=KeySchema(prefix), timeout=30.0) as store:
        informer = Informer(store=store)
        t0 = time.perf_counter()
        await informer.list_once()
        return time.perf_counter() - t0, len(informer.state.instances)


def etcdctl_read(argv: list[str]) -> float:
    """The floor: etcd's own client reading the whole prefix (values included) to /dev/null."""
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,100000")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    print(f"# scale_cli_bench {datetime.now().isoformat(timespec='seconds')}: 1 etcd member, {NODES} nodes, "
          f"{PER_SERVICE} instances per service, median of {args.runs}")
    print(f"{'instances':>10} {'svc ls':>8} {'status':>8} {'svc ls --from-etcd':>19} {'status --from-etcd':>19} "
          f"{'ps SERVICE':>11} {'full load':>10} {'etcdctl get --prefix':>21}")
    with tempfile.TemporaryDirectory() as tmp, etcd_cluster(Path(tmp)) as etcd:
        for size in (int(s) for s in args.sizes.split(",")):
            prefix = f"/bench-{uuid.uuid4().hex[:8]}"
            service = asyncio.run(fill(etcd.endpoints, prefix, size))
            runs = range(args.runs)
            direct_ls = statistics.median(cli(etcd.endpoints, prefix, "svc", "ls", "--from-etcd") for _ in runs)
            direct_status = statistics.median(cli(etcd.endpoints, prefix, "status", "--from-etcd") for _ in runs)
            with drained_agent(etcd.endpoints, prefix, Path(tmp)):
                ls = statistics.median(cli(etcd.endpoints, prefix, "svc", "ls") for _ in runs)
                status = statistics.median(cli(etcd.endpoints, prefix, "status") for _ in runs)
                out = subprocess.run([sys.executable, "-m", "daprdockr", "--etcd", etcd.endpoints, "--prefix", prefix,
                                      "status", "--json"], check=True, capture_output=True, text=True).stdout
                assert json.loads(out)["source"].startswith(f"agent {AGENT}"), out[-300:]
            ps = statistics.median(cli(etcd.endpoints, prefix, "ps", service) for _ in runs)
            loads = [asyncio.run(full_load(etcd.endpoints, prefix)) for _ in runs]
            assert all(n == size for _, n in loads), json.dumps([n for _, n in loads])
            load = statistics.median(t for t, _ in loads)
            argv = etcd.etcdctl("get", "--prefix", prefix + "/")
            argv[argv.index("--command-timeout=2s")] = "--command-timeout=60s"
            floor = statistics.median(etcdctl_read(argv) for _ in runs)
            print(f"{size:>10} {ls:>7.2f}s {status:>7.2f}s {direct_ls:>18.2f}s {direct_status:>18.2f}s "
                  f"{ps:>10.2f}s {load:>9.2f}s {floor:>20.2f}s")


if __name__ == "__main__":
    main()
