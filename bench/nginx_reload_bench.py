"""nginx reloads under load: requests/s and failures through the managed nginx while the backend
set changes (>= 20 reloads), side by side with the same load straight at one backend.

Backends: one plain nginx serving ``return 200`` on 6 loopback ports (127.0.0.11/12, fast and
not the thing measured).  The DaprDockr side is the real :class:`NginxManager` (render, ``nginx
-t``, atomic swap, SIGHUP) fed a synthetic cluster state that alternates between 2 and 6
running instances every ``--flip`` seconds while ``wrk`` runs.  Target: 0 failed requests
(non-2xx + socket errors) at >= 5k requests/s.

    .venv/bin/python bench/nginx_reload_bench.py [--seconds 25] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from daprdockr.core.model import InstanceRecord, ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState
from daprdockr.proxy import NginxManager

WEB = ServiceName(group="bench", service="web")
EDGE = ("127.0.0.31", 18080)
BACKENDS = [("127.0.0.11", 18101 + i) if i % 2 == 0 else ("127.0.0.12", 18101 + i) for i in range(6)]


def backend_conf(root: Path) -> str:
    listens = "".join(f"        listen {h}:{p};\n" for h, p in BACKENDS)
    return (
        f"worker_processes 1;\npid {root}/b.pid;\nerror_log {root}/b.err;\ndaemon off;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n    access_log off;\n    client_body_temp_path {root}/t;\n    proxy_temp_path {root}/t;\n"
        f"    fastcgi_temp_path {root}/t;\n    uwsgi_temp_path {root}/t;\n    scgi_temp_path {root}/t;\n"
        f"    server {{\n{listens}        location / {{ return 200 \"ok\\n\"; }}\n    }}\n}}\n"
    )


def state(count: int) -> ClusterState:
    spec = ServiceSpec(name=WEB, image="x", instances=count, http_host="web.bench.test", http_port=8080)
    instances = {
        (WEB, i + 1): InstanceRecord(service=WEB, number=i + 1, node=f"n{i % 2 + 1}", address=h, state="running",
                                     ports=(("8080/tcp", p),))
        for i, (h, p) in enumerate(BACKENDS[:count])
    }
    return ClusterState(services={WEB: spec}, instances=instances)


def parse_wrk(out: str) -> dict[str, float]:
    reqs = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(x) for x in sock.groups()) if sock else 0
    detail = sock.group(0) if sock else "Socket errors: none"
    lat = re.search(r"Latency\s+([\d.]+\w+)", out)
    return {"requests": reqs, "rps": rps, "non2xx": non2xx, "socket_errors": errors,
            "latency_avg": lat.group(1) if lat else "?", "detail": detail}  # type: ignore[dict-item]


async def wrk(url: str, *, seconds: int, connections: int, host: str | None = None,
              close: bool = False) -> dict[str, float]:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if host:
        args += ["-H", f"Host: {host}"]
    if close:
        args += ["-H", "Connection: close"]
    proc = await asyncio.create_subprocess_exec(*args, url, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return parse_wrk(out.decode())


def parse_hey(out: str) -> dict[str, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    errors_part = out.split("Error distribution:", 1)[1] if "Error distribution:" in out else ""
    errors = sum(int(n) for n in re.findall(r"\[(\d+)\]\s+\S", errors_part))
    lat = re.search(r"Average:\s+([\d.]+) secs", out)
    return {"requests": sum(codes.values()) + errors, "rps": rps,
            "non2xx": sum(n for c, n in codes.items() if not 200 <= c < 400), "socket_errors": errors,
            "latency_avg": f"{float(lat.group(1)) * 1000:.2f}ms" if lat else "?",  # type: ignore[dict-item]
            "detail": f"errors: {errors_part.strip()[:200] or 'none'}"}  # type: ignore[dict-item]


async def hey(url: str, *, seconds: int, connections: int, host: str) -> dict[str, float]:
    """hey (Go net/http, keep-alive): like browsers it retries an idempotent request once when a
    reused idle connection turns out closed (RFC 9112 section 9.3.1)."""
    proc = await asyncio.create_subprocess_exec(
        "hey", "-z", f"{seconds}s", "-c", str(connections), "-host", host, url, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return parse_hey(out.decode())


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=25)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--flip", type=float, default=0.6, help="seconds between backend-set changes")
    args = ap.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "t").mkdir()
        (root / "backends.conf").write_text(backend_conf(root))
        backends = subprocess.Popen([nginx, "-p", str(root), "-c", str(root / "backends.conf")])
        manager = NginxManager(state_dir=root / "edge", listen=EDGE, binary=nginx, workers=1)
        try:
            await asyncio.sleep(0.5)
            await manager.start()
            runner = asyncio.create_task(manager.run())
            manager.update(state(2))
            await asyncio.sleep(1.2)

            direct = await wrk(f"http://{BACKENDS[0][0]}:{BACKENDS[0][1]}/", seconds=args.seconds,
                               connections=args.connections)
            results = {}
            clients = ["wrk keep-alive", "wrk Connection: close"] + (["hey keep-alive"] if shutil.which("hey") else [])
            for client in clients:
                reloads_before = manager.stats.reloads
                url = f"http://{EDGE[0]}:{EDGE[1]}/"
                load = asyncio.create_task(
                    hey(url, seconds=args.seconds, connections=args.connections, host="web.bench.test")
                    if client.startswith("hey") else
                    wrk(url, seconds=args.seconds, connections=args.connections, host="web.bench.test",
                        close=client.endswith("close"))
                )
                t0 = time.monotonic()
                flips = 0
                while not load.done() and time.monotonic() - t0 < args.seconds:
                    flips += 1
                    manager.update(state(6 if flips % 2 else 2))
                    await asyncio.sleep(args.flip)
                results[client] = (await load, manager.stats.reloads - reloads_before)
            runner.cancel()
        finally:
            await manager.stop()
            backends.terminate()
            backends.wait()
    print(f"nginx reload benchmark, {args.seconds}s each, wrk -t2 -c{args.connections}, "
          f"{time.strftime('%Y-%m-%d')}")
    print(f"{'':40}{'requests/s':>12}{'requests':>11}{'non-2xx':>9}{'sock err':>9}{'lat avg':>9}")
    rows = [("direct, one backend", direct)]
    for client, (r, n) in results.items():
        rows.append((f"nginx, {n} reloads, {client}", r))
    for label, r in rows:
        print(f"{label:44}{r['rps']:>12.0f}{r['requests']:>11.0f}{r['non2xx']:>9.0f}{r['socket_errors']:>9.0f}"
              f"{r['latency_avg']:>9}   {r['detail']}")
    for client, (r, n) in results.items():
        failed = r["non2xx"] + r["socket_errors"]
        verdict = "MET" if failed == 0 and r["rps"] >= 5000 and n >= 20 else "NOT MET"
        print(f"{client} clients: reloads={n} failed={failed:.0f} "
              f"rps={r['rps']:.0f} -> target (0 failed at >= 5000 req/s, >= 20 reloads) {verdict}")


if __name__ == "__main__":
    asyncio.run(main())
