"""Load clients and freezes for partial-failure tests and benchmarks: ``wrk`` (throughput and
failures) and ``hey -o csv`` (every request's own time), and SIGSTOP/SIGCONT of processes.

Only loopback addresses are ever the target.  Both clients are bounded in time.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class WrkRun:
    requests: int
    rps: float
    failed: int  # non-2xx/3xx answers plus socket errors
    detail: str


@dataclass(frozen=True, slots=True)
class HeyRun:
    times: tuple[float, ...]  # seconds, per answered request
    statuses: tuple[int, ...]
    errors: int  # requests that got no answer at all

    @property
    def failed(self) -> int:
        return self.errors + sum(1 for s in self.statuses if not 200 <= s < 400)

    def slower_than(self, seconds: float) -> int:
        return sum(1 for t in self.times if t > seconds)


def parse_wrk_run(out: str) -> WrkRun:
    reqs = int(m.group(1)) if (m := re.search(r"(\d+) requests in", out)) else 0
    rps = float(m.group(1)) if (m := re.search(r"Requests/sec:\s+([\d.]+)", out)) else 0.0
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(x) for x in sock.groups()) if sock else 0
    return WrkRun(requests=reqs, rps=rps, failed=non2xx + errors,
                  detail=f"non-2xx {non2xx}, {sock.group(0) if sock else 'no socket errors'}")


async def wrk(url: str, *, host: str, seconds: float, connections: int = 16, timeout: float = 30.0) -> WrkRun:
    """wrk keep-alive; a request slower than ``timeout`` counts as failed (a socket error)."""
    proc = await asyncio.create_subprocess_exec(
        "wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--timeout", f"{timeout:g}s", "-H", f"Host: {host}",
        url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return parse_wrk_run(out.decode(errors="replace"))


def parse_hey_csv(out: str, *, sent: int | None = None) -> HeyRun:
    times, statuses = [], []
    for row in csv.DictReader(io.StringIO(out)):
        try:
            times.append(float(row["response-time"]))
            statuses.append(int(row["status-code"]))
        except (KeyError, TypeError, ValueError):
            continue
    return HeyRun(times=tuple(times), statuses=tuple(statuses), errors=max(0, (sent or 0) - len(times)))


async def hey(url: str, *, host: str, requests: int, qps: float, connections: int = 16, timeout: float = 30.0,
              disable_keepalive: bool = False) -> HeyRun:
    """hey sending ``requests`` at ``qps`` in all, with every request's time (``-o csv``).  hey
    writes no row for a request that got no answer, so those are the requests sent minus the rows."""
    requests -= requests % connections  # hey sends requests // connections per worker
    per_worker = max(1.0, qps / connections)
    args = ["hey", "-n", str(requests), "-c", str(connections), "-q", f"{per_worker:g}",
            "-t", f"{max(1, int(timeout))}", "-host", host]
    if disable_keepalive:
        args.append("-disable-keepalive")
    proc = await asyncio.create_subprocess_exec(*args, "-o", "csv", url, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate()
    return parse_hey_csv(out.decode(errors="replace"), sent=requests)


async def hey_through_freeze(url: str, *, host: str, victims: list[int], requests: int = 3000, qps: float = 500,
                             connections: int = 16, before: float = 1.0, freeze_for: float = 4.0) -> HeyRun:
    """hey (``requests`` at ``qps``), with the processes ``victims`` frozen ``before`` seconds into
    its run for ``freeze_for`` seconds (and thawed whatever happens)."""
    run = asyncio.create_task(hey(url, host=host, requests=requests, qps=qps, connections=connections, timeout=30))
    await asyncio.sleep(before)
    freeze(victims)
    try:
        await asyncio.sleep(freeze_for)
    finally:
        freeze(victims, thaw=True)
    return await run


def container_pids(container_id: str) -> list[int]:
    """Every process of a container, from its cgroup (the host's view)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if container_id in (entry / "cgroup").read_text():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def freeze(pids: Iterable[int], *, thaw: bool = False) -> None:
    """SIGSTOP (or SIGCONT) every process: it keeps its sockets, so the kernel still accepts
    connections for it, and nothing ever answers them."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT if thaw else signal.SIGSTOP)
        except ProcessLookupError:
            continue
