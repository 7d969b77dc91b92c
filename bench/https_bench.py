"""HTTPS through the agent's nginx: the certificate chosen by SNI in Lua beside a static one.

Two nginx masters run side by side on 127.0.0.1, from the same configuration (the agent's: same
workers, routing table and Lua balancer, TLS 1.2/1.3, HTTP/2, session cache):

* ``lua``: the agent's own :class:`~daprdockr.proxy.NginxManager`, the certificate for
  ``localhost`` posted to its control socket and chosen per handshake by
  ``ssl_certificate_by_lua`` (``lua/daprdockr/tls.lua``);
* ``static``: the same nginx.conf text (paths and ports moved), the same certificate in its
  ``ssl_certificate`` directive and no ``ssl_certificate_by_lua_block``.

Both proxy to one backend (a third nginx answering ``ok``).  For each, alternately, ``--rounds``
times (the order alternating): ``wrk`` keep-alive (``--connections``, ``--seconds``: requests/s
over established TLS connections), and ``--clients`` processes each opening a new connection
with a full TLS handshake (SNI ``localhost``, no session resumption: wrk's ``Connection: close``
resumes its TLS sessions, which skips the certificate selection) and one request per connection:
handshakes/s, checked against the ``lua`` nginx's own handshake counter.  The medians are
compared.  Target: ``lua`` >= 0.9 x ``static`` for both.  (``wrk`` takes the TLS name from the
URL, so the host is ``localhost``.)

    .venv/bin/python bench/https_bench.py [--seconds 5] [--connections 16] [--clients 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import ssl
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

import aiohttp
from benchlib import wrk
from tests.support.procs import free_port
from tests.support.tlsgen import issue, make_ca

from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.nginx_tls import served_pem
from daprdockr.core.records import InstanceRecord
from daprdockr.core.routing import routing_table, table_update
from daprdockr.core.state import ClusterState
from daprdockr.proxy import NginxManager, control_accepts

IP = "127.0.0.1"
HOST = "localhost"
WEB = ServiceName(group="bench", service="tls")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
BACKEND_CONF = """\
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    server {{ listen {ip}:{port}; location / {{ return 200 "ok\\n"; }} }}
}}
"""


@contextlib.asynccontextmanager
async def nginx_process(root: Path, conf: str) -> AsyncIterator[None]:
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    path = root / "nginx.conf"
    path.write_text(conf)
    proc = await asyncio.create_subprocess_exec(NGINX, "-p", str(root), "-c", str(path),
                                                stderr=asyncio.subprocess.PIPE, start_new_session=True)
    try:
        await asyncio.sleep(0.3)
        if proc.returncode is not None:
            raise RuntimeError(f"nginx exited: {(await proc.stderr.read()).decode() if proc.stderr else ''}")
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()


def bench_state(backend: int) -> ClusterState:
    spec = ServiceSpec.from_dict({"image": "x", "http_host": HOST, "http_port": 80, "https": "on"}, name=WEB)
    rec = InstanceRecord(service=WEB, number=1, node="n1", address=IP, state="running", ports=(("80/tcp", backend),))
    return ClusterState(services={WEB: spec}, instances={(WEB, 1): rec})


def static_conf(lua: NginxManager, *, root: Path, http: int, https: int, cert: Path, key: Path) -> str:
    """The agent's nginx.conf, moved to ``root`` and new ports, with ``cert`` as a static certificate."""
    assert lua.https_listen is not None
    text = lua.conf.read_text()
    text = text.replace(f"{lua.paths.default_cert};", f"{cert};").replace(f"{lua.paths.default_key};", f"{key};")
    text = text.replace(str(lua.state_dir), str(root))
    text = text.replace(f"{IP}:{lua.listen[1]} ", f"{IP}:{http} ").replace(f"{IP}:{lua.https_listen[1]} ",
                                                                          f"{IP}:{https} ")
    lines = [line for line in text.splitlines() if "ssl_certificate_by_lua_block" not in line]
    return "\n".join(lines) + "\n"


async def post_table(control: str, state: ClusterState) -> None:
    for _ in range(100):
        if await control_accepts(control):
            break
        await asyncio.sleep(0.05)
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=control)) as session, \
            session.post("http://nginx/routes", data=table_update(None, routing_table(state), generation=1)) as resp:
        assert resp.status == 200, await resp.text()


def handshake_client(port: int, seconds: float) -> tuple[int, int]:
    """In a process of its own: new TLS connections (SNI localhost, a fresh session each), one
    request each, for ``seconds``: (answered 200, failed)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # (the client's cost is not measured)
    ok = failed = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with socket.create_connection((IP, port), timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname=HOST) as tls:
                tls.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := tls.recv(4096):
                    data += chunk
            ok += data.startswith(b"HTTP/1.1 200")
            failed += not data.startswith(b"HTTP/1.1 200")
        except OSError:
            failed += 1
    return ok, failed


async def new_connections(pool: ProcessPoolExecutor, port: int, *, seconds: int,
                          clients: int) -> tuple[float, int, int]:
    """(handshakes per second, answered, failed) of ``clients`` handshake clients."""
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    done = await asyncio.gather(*(loop.run_in_executor(pool, handshake_client, port, seconds) for _ in range(clients)))
    took = time.monotonic() - start
    answered = sum(ok for ok, _ in done)
    return answered / took, answered, sum(f for _, f in done)


async def handshakes(lua: NginxManager) -> int:
    await lua.refresh_stats()
    return lua.stats.handshakes


async def main(seconds: int, connections: int, clients: int, rounds: int) -> None:
    ca = make_ca("https_bench CA")
    leaf = issue([HOST], ca=ca)
    results: dict[tuple[str, str], list[float]] = {}
    errors: dict[str, int] = {}
    counted: list[tuple[int, int]] = []  # (requests, handshakes) of the lua nginx's new-connection runs
    with tempfile.TemporaryDirectory(prefix="daprdockr-https-bench-") as tmp:
        root = Path(tmp)
        cert, key = root / "leaf.pem", root / "leaf.key"
        cert.write_text(leaf.cert_pem + ca.cert_pem)
        key.write_text(leaf.key_pem)
        backend = free_port(IP)
        state = bench_state(backend)
        lua = NginxManager(state_dir=root / "lua", listen=(IP, free_port(IP)), https_listen=(IP, free_port(IP)),
                           node="bench", binary=NGINX)
        await lua.start()
        task = asyncio.create_task(lua.run())
        try:
            lua.update(state)
            lua.set_tls(certs={HOST: served_pem(leaf.cert_pem + ca.cert_pem, leaf.key_pem)}, challenges={})
            while lua.tls.pending or not lua.table:
                await asyncio.sleep(0.05)
            static_https = free_port(IP)
            conf = static_conf(lua, root=root / "static", http=free_port(IP), https=static_https, cert=cert, key=key)
            assert lua.https_listen is not None
            ports = {"lua": lua.https_listen[1], "static": static_https}
            urls = {mode: f"https://{HOST}:{port}/" for mode, port in ports.items()}
            async with nginx_process(root / "backend", BACKEND_CONF.format(root=root / "backend", ip=IP,
                                                                           port=backend)), \
                    nginx_process(root / "static", conf):
                await post_table(str(root / "static" / "control.sock"), state)
                for mode in urls:  # warm up both (workers, caches)
                    await wrk(urls[mode], seconds=1, connections=connections)
                pool = ProcessPoolExecutor(max_workers=clients)
                for i in range(rounds):
                    for mode in (("lua", "static") if i % 2 == 0 else ("static", "lua")):
                        kept = await wrk(urls[mode], seconds=seconds, connections=connections)
                        before = await handshakes(lua) if mode == "lua" else 0
                        rate, answered, failed = await new_connections(pool, ports[mode], seconds=seconds,
                                                                       clients=clients)
                        if mode == "lua":
                            counted.append((answered, await handshakes(lua) - before))
                        results.setdefault((mode, "keep-alive"), []).append(kept["rps"])
                        results.setdefault((mode, "new connections"), []).append(rate)
                        errors[mode] = errors.get(mode, 0) + failed + int(kept["non2xx"] + kept["socket_errors"])
                pool.shutdown()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await lua.stop()
    print(f"# https_bench {datetime.now():%Y-%m-%d %H:%M}: nginx {lua.workers} workers, wrk -t2 -c{connections} "
          f"keep-alive and {clients} handshake clients, {seconds} s per run, {rounds} rounds (medians), TLS 1.3, "
          "ECDSA P-256 leaf + CA chain")
    print(f"{'measure':<22} {'static /s':>10} {'lua SNI /s':>11} {'ratio':>6}")
    for measure in ("keep-alive", "new connections"):
        s = statistics.median(results[("static", measure)])
        v = statistics.median(results[("lua", measure)])
        label = "requests (keep-alive)" if measure == "keep-alive" else "handshakes (new conn)"
        print(f"{label:<22} {s:>10.0f} {v:>11.0f} {v / s:>6.2f}")
    print(f"failed requests (non-2xx + socket errors): static {errors.get('static', 0)}, lua {errors.get('lua', 0)}")
    print("lua nginx: certificate selections / new-connection requests per run: "
          + ", ".join(f"{h}/{r}" for r, h in counted))
    print("target: lua >= 0.90 x static for both")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.connections, args.clients, args.rounds))
