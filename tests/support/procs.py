"""Start real services for tests: etcd members on free loopback ports, in a temp dir.

Used by the pytest fixtures in ``tests/conftest.py`` and by the cluster tests.  Every process
started here is killed when its context exits.

Ports handed to processes that bind them later (etcd members, agents) come from *below* the
kernel's ephemeral range (``ip_local_port_range``): a port from ``bind(0)`` is free when it is
picked, but the kernel can give the same number to an outgoing connection (the suite makes tens
of thousands) or to a Docker-published port before the process binds it, and the process then
fails with "address already in use".  A port is never handed out twice in one test session.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_handed_out: set[tuple[str, int]] = set()


def _below_ephemeral() -> range:
    """Ports the kernel never picks by itself: from 10000 up to the ephemeral range's start."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10000, max(low, 20000))


def _bindable(host: str, port: int, *, udp: bool) -> bool:
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,)
    try:
        for kind in kinds:
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind((host, port))
    except OSError:
        return False
    return True


def free_port(host: str = "127.0.0.1", *, udp: bool = False) -> int:
    """A port free on ``host`` (for TCP, and for UDP too with ``udp``), outside the ephemeral range."""
    ports = _below_ephemeral()
    for _ in range(500):
        port = random.choice(ports)
        if (host, port) not in _handed_out and _bindable(host, port, udp=udp):
            _handed_out.add((host, port))
            return port
    raise RuntimeError(f"no free port on {host} in {ports.start}-{ports.stop - 1}")


def wait_port(
    host: str, port: int, timeout: float = 15.0, *, proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Until ``host:port`` accepts; fails at once when ``proc`` exits first, with ``log``'s tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited {proc.returncode} before {host}:{port} opened{_tail(log)}")
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open within {timeout}s{_tail(log)}")


def _tail(log: Path | None, lines: int = 20) -> str:
    if log is None:
        return ""
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"; last lines of {log}:\n" + "\n".join(text)


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    proc: subprocess.Popen[bytes] | None = None

    tls: bool = False

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


class EtcdCluster:
    """One or more real etcd members on loopback (``etcd`` from Debian's etcd-server)."""

    def __init__(
        self, workdir: Path, *, size: int = 1, client_ports: list[int] | None = None,
        tls: tuple[Path, Path, Path] | None = None, extra_args: tuple[str, ...] = (),
    ) -> None:
        """``tls``: (server cert, server key, client CA): https client URLs with client-cert auth."""
        self.workdir = workdir
        self.tls = tls
        self.extra_args = extra_args
        ports = client_ports or [free_port() for _ in range(size)]
        self.members = [
            EtcdMember(name=f"m{i}", client_port=p, peer_port=free_port(), tls=tls is not None)
            for i, p in enumerate(ports)
        ]

    def etcdctl(self, *args: str, user: str | None = None) -> list[str]:
        """An etcdctl command line for this cluster (TLS files and user included)."""
        argv = ["etcdctl", "--endpoints", self.endpoints, "--command-timeout=2s"]
        if self.tls is not None:
            cert, key, ca = self.tls
            argv += ["--cacert", str(ca), "--cert", str(cert), "--key", str(key)]
        if user is not None:
            argv += ["--user", user]
        return [*argv, *args]

    @property
    def endpoints(self) -> str:
        return ",".join(m.client_url for m in self.members)

    def start_member(self, m: EtcdMember, *, new: bool = True) -> None:
        binary = shutil.which("etcd") or "/usr/bin/etcd"
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        log = open(self.workdir / f"{m.name}.log", "ab")  # noqa: SIM115 - lives with the process
        m.proc = subprocess.Popen(
            [
                binary,
                "--name", m.name,
                "--data-dir", str(self.workdir / m.name),
                "--listen-client-urls", m.client_url,
                "--advertise-client-urls", m.client_url,
                "--listen-peer-urls", m.peer_url,
                "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", f"t{os.getpid()}",
                "--heartbeat-interval", "50",
                "--election-timeout", "500",
                *(["--cert-file", str(self.tls[0]), "--key-file", str(self.tls[1]), "--client-cert-auth",
                   "--trusted-ca-file", str(self.tls[2])] if self.tls is not None else []),
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ETCD_UNSUPPORTED_ARCH": os.environ.get("ETCD_UNSUPPORTED_ARCH", "")},
        )

    def start(self) -> None:
        for m in self.members:
            self.start_member(m)
        for m in self.members:
            wait_port(
                "127.0.0.1", m.client_port, timeout=30, proc=m.proc, log=self.workdir / f"{m.name}.log"
            )
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = subprocess.run(
                self.etcdctl("put", "/__h", "1"),
                capture_output=True,
                env={**os.environ, "ETCDCTL_API": "3"},
            )
            if ok.returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError("etcd did not become healthy")

    def stop_member(self, m: EtcdMember) -> None:
        if m.proc is not None and m.proc.poll() is None:
            terminate(m.proc, grace=5)

    def stop(self) -> None:
        for m in self.members:
            self.stop_member(m)


@contextlib.contextmanager
def etcd_cluster(workdir: Path, *, size: int = 1) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(workdir, size=size)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def terminate(proc: subprocess.Popen[bytes], *, grace: float) -> None:
    """SIGTERM ``proc``; SIGKILL it if it has not exited within ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
