"""A DNS lab of three network namespaces, for tests and benchmarks that need clients which are
neither loopback nor the host's own addresses (the DNS server's outside and allowed clients).

    srv  198.51.100.1/24 (veth to out)  192.0.2.1/24 (veth to in)  + its own loopback
    out  198.51.100.2/24, default route via srv     (an outside client)
    in   192.0.2.2/24,    default route via srv     (an allowed client: --dns-allow 192.0.2.0/24)

The addresses are RFC 5737 documentation ranges and exist only inside these namespaces, which
have no link to the host's network: nothing the lab sends can leave it.  Processes run in a
namespace through ``ip netns exec``; :meth:`Lab.run` and :meth:`Lab.popen` build those command
lines.  :func:`served_lab` adds what serves DNS in ``srv``: a real etcd on the namespace's own
loopback, a service, a hollow agent (``--runtime hollow``: real lease, claims and DNS) and, if
asked, ``daprdockr dns``.  Tests skip with the reason when the machine cannot create namespaces
(not root, no ``ip``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.support.procs import terminate

SERVER, OUTSIDE, ALLOWED = "198.51.100.1", "198.51.100.2", "192.0.2.2"
ALLOWED_NET = "192.0.2.0/24"
ETCD = "http://127.0.0.1:2379"  # (the server namespace's own loopback)
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Lab:
    srv: str
    out: str
    inside: str

    def argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def run(self, ns: str, argv: Sequence[str], *, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(ns, argv), capture_output=True, text=True, timeout=timeout)

    def popen(self, ns: str, argv: Sequence[str], *, log: IO[bytes] | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(ns, argv), stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})


def why_not() -> str:
    """Why this machine cannot run the lab ("" if it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no ip command (iproute2)"
    name = f"ddprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return ""


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


@contextlib.contextmanager
def dns_lab(tag: str = "") -> Iterator[Lab]:
    """The three namespaces above (names unique to this process); all deleted after."""
    base = f"dd{os.getpid() % 100000}{tag}"
    lab = Lab(srv=f"{base}s", out=f"{base}o", inside=f"{base}i")
    made: list[str] = []
    try:
        for ns in (lab.srv, lab.out, lab.inside):
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for peer, here, there, net in ((lab.out, "198.51.100.1", OUTSIDE, "24"),
                                       (lab.inside, "192.0.2.1", ALLOWED, "24")):
            _ip("-n", lab.srv, "link", "add", "v0" if peer == lab.out else "v1", "type", "veth", "peer", "name", "v",
                "netns", peer)
            dev = "v0" if peer == lab.out else "v1"
            _ip("-n", lab.srv, "addr", "add", f"{here}/{net}", "dev", dev)
            _ip("-n", lab.srv, "link", "set", dev, "up")
            _ip("-n", peer, "addr", "add", f"{there}/{net}", "dev", "v")
            _ip("-n", peer, "link", "set", "v", "up")
            _ip("-n", peer, "route", "add", "default", "via", here)
        yield lab
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "pids", ns], capture_output=True)  # (processes end with their tests)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)



def daprdockr(*args: str) -> list[str]:
    return [sys.executable, "-m", "daprdockr", "--etcd", ETCD, *args]


@contextlib.contextmanager
def served_lab(tmp: Path, *, instances: int, agent_dns: str, mode_dns: str = "",
               extra: Sequence[str] = ()) -> Iterator[Lab]:
    """The lab with, in ``srv``: etcd, the service ``web.lab`` (``instances``, HTTP port 8080), a
    hollow agent advertising :data:`SERVER` with ``--dns-listen agent_dns`` and, when
    ``mode_dns`` is given, ``daprdockr dns --listen mode_dns``; both with ``--dns-allow``
    :data:`ALLOWED_NET`, an upstream where nothing listens, and ``extra`` agent options.  Logs in
    ``tmp``; every process stopped after."""
    procs: list[subprocess.Popen[bytes]] = []
    with dns_lab() as lab:
        try:
            etcd_log = open(tmp / "etcd.log", "ab")  # noqa: SIM115 - lives with the process
            procs.append(lab.popen(lab.srv, ["etcd", "--data-dir", str(tmp / "etcd"), "--listen-client-urls", ETCD,
                                             "--advertise-client-urls", ETCD,
                                             "--listen-peer-urls", "http://127.0.0.1:2380"], log=etcd_log))
            deadline = time.monotonic() + 30
            while lab.run(lab.srv, ["etcdctl", "--endpoints", ETCD, "put", "/probe", "1"]).returncode:
                if time.monotonic() > deadline:
                    raise TimeoutError((tmp / "etcd.log").read_text()[-2000:])
                time.sleep(0.2)
            r = lab.run(lab.srv, daprdockr("svc", "set", "web.lab", "--image", "x", "--instances", str(instances),
                                           "--http-port", "8080"))
            if r.returncode:
                raise RuntimeError(r.stderr)
            allow = ["--dns-allow", ALLOWED_NET, "--dns-upstream", "127.0.0.1:9"]  # (nothing listens upstream)
            agent_log = open(tmp / "agent.log", "ab")  # noqa: SIM115
            procs.append(lab.popen(lab.srv, daprdockr(
                "agent", "--runtime", "hollow", "--hollow-start-delay", "0.01", "--node-id", "h1", "--advertise-ip",
                SERVER, "--dns-listen", agent_dns, "--http-listen", "off", "--api-listen", "127.0.0.1:7400",
                "--state-dir", str(tmp / "agent"), *allow, *extra), log=agent_log))
            if mode_dns:
                dns_log = open(tmp / "dns.log", "ab")  # noqa: SIM115
                procs.append(lab.popen(lab.srv, daprdockr("dns", "--listen", mode_dns, *allow), log=dns_log))
            yield lab
        finally:
            for proc in reversed(procs):
                terminate(proc, grace=10)
