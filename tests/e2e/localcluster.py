"""Drive scripts/cluster.sh (3 etcd members + 3 agent processes) from tests, on test ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "cluster.sh"


@dataclass
class LocalCluster:
    dir: Path
    prefix: str  # node id prefix
    etcd_base: int
    dns_port: int
    http_port: int
    api_port: int
    ttl: int

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DAPRDOCKR_CLUSTER_DIR": str(self.dir), "DAPRDOCKR_CLUSTER_NODE_PREFIX": self.prefix,
            "DAPRDOCKR_CLUSTER_ETCD_BASE": str(self.etcd_base), "DAPRDOCKR_CLUSTER_DNS_PORT": str(self.dns_port),
            "DAPRDOCKR_CLUSTER_HTTP_PORT": str(self.http_port), "DAPRDOCKR_CLUSTER_API_PORT": str(self.api_port),
            "DAPRDOCKR_CLUSTER_TTL": str(self.ttl), "PY": sys.executable,
        }

    @property
    def etcd(self) -> str:
        return ",".join(f"http://127.0.0.1:{self.etcd_base + i}" for i in (1, 2, 3))

    @property
    def nodes(self) -> dict[str, str]:
        return {f"{self.prefix}{i}": f"127.0.0.1{i}" for i in (1, 2, 3)}

    def script(self, *args: str) -> None:
        subprocess.run(["bash", str(SCRIPT), *args], env=self.env, check=True, capture_output=True, timeout=120)

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([sys.executable, "-m", "daprdockr", "--etcd", self.etcd, *args],
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"daprdockr {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def pid(self, what: str) -> int | None:
        try:
            return int((self.dir / f"{what}.pid").read_text())
        except (OSError, ValueError):
            return None

    def kill(self, what: str, sig: int = signal.SIGKILL) -> None:
        pid = self.pid(what)
        if pid:
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
            (self.dir / f"{what}.pid").unlink(missing_ok=True)

    def alive(self, what: str) -> bool:
        pid = self.pid(what)
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"

    def nginx_pid(self, node: str) -> int | None:
        try:
            return int((self.dir / "state" / node / "nginx" / "nginx.pid").read_text())
        except (OSError, ValueError):
            return None

    def state(self) -> dict[str, object]:
        return json.loads(self.cli("status", "--json").stdout)  # type: ignore[no-any-return]

    def instances(self) -> list[dict[str, object]]:
        return json.loads(self.cli("ps", "--json").stdout)  # type: ignore[no-any-return]


def docker_instances(nodes: list[str], service: str = "web") -> dict[str, list[tuple[str, str]]]:
    """instance number -> [(node, container id)] of running containers, from `docker ps`."""
    out = subprocess.run(
        ["docker", "ps", "--filter", f"label=daprdockr.service={service}", "--format",
         '{{.ID}} {{.Label "daprdockr.node"}} {{.Label "daprdockr.instance"}}'],
        capture_output=True, text=True, check=True,
    ).stdout
    result: dict[str, list[tuple[str, str]]] = {}
    for line in filter(None, out.splitlines()):
        cid, node, n = line.split()
        if node in nodes:
            result.setdefault(n, []).append((node, cid))
    return result


def dig(server: str, port: int, *args: str) -> str:
    return subprocess.run(["dig", f"@{server}", "-p", str(port), "+time=1", "+tries=2", *args],
                          capture_output=True, text=True, timeout=20).stdout


def wait_until(predicate, *, timeout: float, interval: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


@contextmanager
def local_cluster(tmp: Path, *, prefix: str, etcd_base: int, ttl: int = 5) -> Iterator[LocalCluster]:
    c = LocalCluster(dir=tmp / "cluster", prefix=prefix, etcd_base=etcd_base, dns_port=10053, http_port=10080,
                     api_port=17400, ttl=ttl)
    try:
        c.script("up")
        wait_until(lambda: len(c.state()["nodes"]) == 3, timeout=30, what="3 nodes registered")  # type: ignore[arg-type]
        yield c
    finally:
        subprocess.run(["bash", str(SCRIPT), "down"], env=c.env, capture_output=True, timeout=120)
