"""A DNS lab of three network namespaces, for tests and benchmarks that need clients which are
neither loopback nor the host's own addresses (the DNS server's outside and allowed clients).

    srv  198.51.100.1/24 (veth to out)  192.0.2.1/24 (veth to in)  + its own loopback
    out  198.51.100.2/24, default route via srv     (an outside client)
    in   192.0.2.2/24,    default route via srv     (an allowed client: --dns-allow 192.0.2.0/24)

The addresses are RFC 5737 documentation ranges and exist only inside these namespaces, which
have no link to the host's network: nothing the lab sends can leave it.  Processes run in a
namespace through ``ip netns exec``; :meth:`Lab.run` and :meth:`Lab.popen` build those command
lines.  Tests skip with the reason when the machine cannot create namespaces (not root, no ``ip``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO

SERVER, OUTSIDE, ALLOWED = "198.51.100.1", "198.51.100.2", "192.0.2.2"
ALLOWED_NET = "192.0.2.0/24"


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

