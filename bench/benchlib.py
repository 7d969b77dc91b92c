"""Shared pieces of the cluster benchmarks (``bench/*_bench.py``).

The benchmarks drive the same real process cluster as the end-to-end tests
(:class:`tests.e2e.realcluster.RealCluster`: 3 etcd members, 3 agent processes on
127.0.0.11/12/13 with DNS and nginx) and observe it from the outside: etcd reads, ``docker``,
HTTP through nginx.  Only loopback addresses are ever contacted.  Run from the repository root,
e.g. ``.venv/bin/python bench/convergence_bench.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from tests.e2e.probes import IDENTITY_CMD, http_sample  # noqa: E402

from daprdockr.adapters.etcd_store import EtcdStore  # noqa: E402
from daprdockr.core.model import ServiceSpec  # noqa: E402
from daprdockr.core.names import ServiceName  # noqa: E402
from daprdockr.core.state import ClusterState  # noqa: E402

IMAGE = "daprdockr-test/busybox:latest"
WEB = ServiceName(group="bench", service="web")
HOST = "web.bench.test"


def new_prefix() -> str:
    return f"/bench{uuid.uuid4().hex[:8]}"


def web_spec(instances: int) -> ServiceSpec:
    return ServiceSpec.from_dict(
        {"image": IMAGE, "instances": instances, "http_host": HOST, "http_port": 8080, "cmd": IDENTITY_CMD},
        name=WEB,
    )


def running_numbers(state: ClusterState) -> set[int]:
    return {r.number for r in state.instances_of(WEB) if r.state == "running"}


async def wait_state(
    store: EtcdStore, predicate: Callable[[ClusterState], bool], *, timeout: float, interval: float = 0.05
) -> float:
    """Poll etcd until ``predicate``; returns the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while True:
        state = await store.snapshot()
        if predicate(state):
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"etcd state not reached in {timeout}s: {sorted(running_numbers(state))}")
        await asyncio.sleep(interval)


async def wait_identities(
    session: aiohttp.ClientSession, *, ip: str, port: int, done: Callable[[set[str]], bool], timeout: float,
    batch: int = 24,
) -> float:
    """Send batches of requests through one nginx until the identities seen so far satisfy
    ``done``; returns the monotonic time of the answer that completed them (not the end of its
    batch: a batch of 100 requests through busybox httpd takes tens of milliseconds)."""
    seen_at: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while True:
        sample = await http_sample(session, ip=ip, port=port, host=HOST, count=batch)
        for identity, at in sample.first_seen.items():
            seen_at.setdefault(identity, at)
        if done(set(seen_at)):
            so_far: set[str] = set()
            for identity, at in sorted(seen_at.items(), key=lambda item: item[1]):
                so_far.add(identity)
                if done(so_far):
                    return at
        if time.monotonic() > deadline:
            raise TimeoutError(f"routes not complete in {timeout}s: saw {sorted(seen_at)}")
        await asyncio.sleep(0.02)


async def route_peers(session: aiohttp.ClientSession, host: str) -> int:
    """How many peers one agent's nginx routes ``host`` to now, read from its routing table (the
    Lua shared dict) through ``session``, bound to the agent's private control socket."""
    async with session.get("http://nginx/routes") as resp:
        text = await resp.text()
    for line in text.splitlines():
        words = line.split()
        if words[:2] == ["route", host]:
            return len(words) - 2
    return 0


async def wait_routed(sockets: list[Path], *, host: str, peers: int, timeout: float,
                      interval: float = 0.005) -> float:
    """Poll every agent's nginx routing table until each routes ``host`` to ``peers`` peers;
    returns the monotonic time that first held (each poll is one small request per agent, on a
    session per agent kept for the whole wait)."""
    sessions = [aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(s))) for s in sockets]
    try:
        deadline = time.monotonic() + timeout
        while True:
            counts = await asyncio.gather(*(route_peers(session, host) for session in sessions))
            if all(c == peers for c in counts):
                return time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"routing tables not complete in {timeout}s: {counts} of {peers} peers")
            await asyncio.sleep(interval)
    finally:
        await asyncio.gather(*(session.close() for session in sessions))


TW_BUCKETS = Path("/proc/sys/net/ipv4/tcp_max_tw_buckets")


@contextlib.contextmanager
def time_wait_cap(cap: int = 2048) -> Iterator[str]:
    """Cap the host's TIME_WAIT sockets for the duration of an HTTP benchmark, then restore.

    The load here opens a new connection per request (busybox httpd closes each one) to a few
    loopback destinations.  A destination hammered within the last 60 s has its ~28k ephemeral
    ports held in TIME_WAIT, and new connections to it then stall (the kernel path was not
    traced): ``wrk`` straight at one port fell from 3 052 to 910 requests/s on its second 20 s
    run, and with the cap it gave 3 224 and 3 018 requests/s on two runs in a row.  That
    punishes whichever run comes after another at the same destination (the direct baselines:
    every run hits the same port), not DaprDockr.  With the cap, a connection past it closes
    without TIME_WAIT.  Yields what was done, for the report."""
    try:
        old = TW_BUCKETS.read_text().strip()
        TW_BUCKETS.write_text(f"{cap}\n")
    except OSError as exc:
        yield f"TIME_WAIT not capped ({exc.strerror}): runs after runs at the same port may stall"
        return
    try:
        yield f"TIME_WAIT capped at {cap} sockets during the runs (was {old})"
    finally:
        TW_BUCKETS.write_text(f"{old}\n")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


async def run(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{argv[:3]} failed: {err.decode().strip()}")
    return out.decode()


async def raw_round(session: aiohttp.ClientSession, n: int) -> tuple[float, float]:
    """Plain parallel ``docker run``: (seconds until all started, seconds until all answer)."""
    label = f"daprdockr-bench={uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    ids = await asyncio.gather(*(
        run("docker", "run", "-d", "--init", "--label", label, "-p", "127.0.0.1::8080",
            "-e", f"DAPRDOCKR_INSTANCE={i}", "-e", "DAPRDOCKR_NODE=raw", IMAGE, *IDENTITY_CMD)
        for i in range(1, n + 1)
    ))
    started = time.monotonic() - t0
    try:
        inspected = json.loads(await run("docker", "inspect", *(i.strip() for i in ids)))
        ports = [int(c["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]) for c in inspected]

        async def answered(port: int) -> None:
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/id",
                                           timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.02)

        await asyncio.wait_for(asyncio.gather(*(answered(p) for p in ports)), 120)
        return started, time.monotonic() - t0
    finally:
        await run("docker", "rm", "-f", *(i.strip() for i in ids))


# ------------------------------------------------------------------ HTTP load clients
def seconds_of(latency: object) -> float:
    """wrk's "997.03ms" / "1.54s" / "850.00us" as seconds (nan when absent or not a figure)."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", str(latency))
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2)] if m else float("nan")


def _latency(secs: float) -> str:
    return f"{secs * 1000:.2f}ms" if secs < 1 else f"{secs:.2f}s"


# In place of wrk's latency figures when they contradict its own throughput (see parse_wrk).
LATENCY_UNTRUSTED = "n/a*"


def parse_wrk(out: str, *, connections: int | None = None) -> dict[str, float]:
    """wrk's figures.  With ``connections``, its latency figures are checked against Little's law:
    a connection carries one request at a time, so the latencies of a run sum to at most
    connections x its length, i.e. the average is at most connections / throughput.  wrk 4.1 at
    16 connections printed averages 17-20 x that bound (and p90 ~0.5 s), at a bare busybox
    container and through nginx alike, while hey's per-request times on the same paths gave p99
    ~10 ms; such latency figures are replaced by :data:`LATENCY_UNTRUSTED` (throughput and errors
    are kept)."""
    reqs = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(x) for x in sock.groups()) if sock else 0
    detail = sock.group(0) if sock else "Socket errors: none"
    lat = re.search(r"Latency\s+([\d.]+\w+)\s+[\d.]+\w+\s+([\d.]+\w+)", out)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out)
    avg, top = (lat.group(1), lat.group(2)) if lat else ("?", "?")
    tail = p99.group(1) if p99 else "?"
    if connections and rps > 0 and seconds_of(avg) > 1.05 * connections / rps:
        top = tail = LATENCY_UNTRUSTED
    return {"requests": reqs, "rps": rps, "non2xx": non2xx, "socket_errors": errors,
            "latency_avg": avg, "latency_max": top, "latency_p99": tail, "detail": detail}  # type: ignore[dict-item]


async def wrk(url: str, *, seconds: int, connections: int, host: str | None = None,
              close: bool = False, timeout: float = 10.0) -> dict[str, float]:
    """wrk's figures; a request slower than ``timeout`` counts as a socket error (wrk's own
    default, 2 s, would count a request delayed by a busy 2-core machine as failed)."""
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", f"{timeout:g}s"]
    if host:
        args += ["-H", f"Host: {host}"]
    if close:
        args += ["-H", "Connection: close"]
    proc = await asyncio.create_subprocess_exec(*args, url, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return parse_wrk(out.decode(), connections=connections)


def parse_hey(out: str) -> dict[str, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    errors_part = out.split("Error distribution:", 1)[1] if "Error distribution:" in out else ""
    errors = sum(int(n) for n in re.findall(r"\[(\d+)\]\s+\S", errors_part))
    lat = re.search(r"Average:\s+([\d.]+) secs", out)
    p99 = re.search(r"99% in ([\d.]+) secs", out)
    top = re.search(r"Slowest:\s+([\d.]+) secs", out)
    return {"requests": sum(codes.values()) + errors, "rps": rps,
            "non2xx": sum(n for c, n in codes.items() if not 200 <= c < 400), "socket_errors": errors,
            "latency_avg": _latency(float(lat.group(1))) if lat else "?",  # type: ignore[dict-item]
            "latency_p99": _latency(float(p99.group(1))) if p99 else "?",  # type: ignore[dict-item]
            "latency_max": _latency(float(top.group(1))) if top else "?",  # type: ignore[dict-item]
            "detail": f"errors: {errors_part.strip()[:200] or 'none'}"}  # type: ignore[dict-item]


async def hey(url: str, *, seconds: int, connections: int, host: str) -> dict[str, float]:
    """hey (Go net/http, keep-alive): like browsers it retries an idempotent request once when a
    reused idle connection turns out closed (RFC 9112 section 9.3.1)."""
    proc = await asyncio.create_subprocess_exec(
        "hey", "-z", f"{seconds}s", "-c", str(connections), "-host", host, url, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return parse_hey(out.decode())
