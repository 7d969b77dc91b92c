"""A real DaprDockr cluster made of processes, for end-to-end tests, chaos tests and benchmarks.

:class:`RealCluster` starts a multi-member etcd (:class:`~tests.support.procs.EtcdCluster`, free
loopback ports) and one ``python -m daprdockr agent`` process per simulated host.  Host ``i``
advertises ``127.0.0.1{i}`` and serves DNS, nginx and its API on that address, each on a port
that was free (TCP and UDP) when the cluster was built.  The CLI is driven the way a user would:
``python -m daprdockr --etcd ... --prefix ... svc set ...``.

Node ids carry a caller-chosen prefix (``e1``, ``c1``, ``b1`` ...) so a test never touches the
containers of another test or of ``scripts/cluster.sh`` (``n1..n3``) on the shared engine.
Every process started here is stopped by :meth:`RealCluster.stop`, which also removes the
nodes' containers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from daprdockr.adapters.procs import stale_nginx_group
from tests.agent.cluster import remove_node_containers
from tests.support.procs import EtcdCluster, free_port

# Forwarding target for non-.container DNS names: a dead loopback port, so that nothing a test
# resolves by mistake ever leaves the machine.
LOOPBACK_UPSTREAM = "127.0.0.1:9"


def free_port_on(ip: str) -> int:
    """A port free for both TCP and UDP on ``ip`` (DNS listens on both)."""
    return free_port(ip, udp=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeAddr:
    """Where one simulated host listens."""

    node_id: str
    ip: str
    dns_port: int
    http_port: int
    api_port: int

    @classmethod
    def allocate(cls, *, node_id: str, ip: str) -> NodeAddr:
        return cls(
            node_id=node_id, ip=ip,
            dns_port=free_port_on(ip), http_port=free_port_on(ip), api_port=free_port_on(ip),
        )


class AgentProcess:
    """One ``python -m daprdockr agent`` subprocess; restartable with the same addresses."""

    def __init__(
        self, *, addr: NodeAddr, etcd: str, prefix: str, state_dir: Path, ttl: int, logdir: Path
    ) -> None:
        self.addr = addr
        self.etcd = etcd
        self.prefix = prefix
        self.state_dir = state_dir
        self.ttl = ttl
        self.log_path = logdir / f"{addr.node_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_args: list[str] = []  # more agent flags, for the next start

    @property
    def node_id(self) -> str:
        return self.addr.node_id

    def argv(self) -> list[str]:
        a = self.addr
        return [
            sys.executable, "-m", "daprdockr", "agent",
            "--node-id", a.node_id, "--advertise-ip", a.ip, "--ttl", str(self.ttl),
            "--state-dir", str(self.state_dir),
            "--dns-listen", f"{a.ip}:{a.dns_port}", "--dns-upstream", LOOPBACK_UPSTREAM,
            "--http-listen", f"{a.ip}:{a.http_port}", "--api-listen", f"{a.ip}:{a.api_port}",
            "--nginx", shutil.which("nginx") or "/usr/sbin/nginx", *self.extra_args,
        ]

    def start(self) -> None:
        if self.alive:
            return
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "DAPRDOCKR_ETCD": self.etcd, "DAPRDOCKR_PREFIX": self.prefix},
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no clean-up at all (containers and maybe nginx are left behind)."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def terminate(self, *, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL after ``timeout``.  Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGUSR1)  # (the agent writes every thread's stack to its log)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(2)
                self.proc.kill()
                self.proc.wait()
                print(f"----- {self.node_id} did not exit {timeout:.0f}s after SIGTERM; its log tail\n"
                      f"{self.log_tail(150)}", file=sys.stderr)
        return self.proc.returncode

    def nginx_dir(self) -> Path:
        return self.state_dir / self.node_id / "nginx"

    def nginx_master_pid(self) -> int | None:
        """The agent's nginx master, from its pid file (``None`` if not running)."""
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.nginx_dir() / "nginx.pid").read_text().strip())
            if _is_nginx(pid):
                return pid
        return None

    def kill_leftover_nginx(self) -> None:
        """Kill what a SIGKILLed agent left of its nginx (master and/or workers): the group."""
        root = self.nginx_dir().resolve()
        pgid = stale_nginx_group(root / "nginx.pid", root / "nginx.conf")
        if pgid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _is_nginx(pid: int) -> bool:
    try:
        return b"nginx" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class RealCluster:
    """``etcd_members`` etcd processes and ``nodes`` agent processes on loopback."""

    def __init__(
        self, workdir: Path, *, prefix: str, nodes: int = 3, etcd_members: int = 3, ttl: int = 5,
        node_prefix: str = "e",
    ) -> None:
        self.workdir = workdir
        self.prefix = prefix
        self.keep_workdir = False  # set by a failing test: logs and data stay for a post-mortem
        (workdir / "etcd").mkdir(parents=True, exist_ok=True)
        (workdir / "agents").mkdir(parents=True, exist_ok=True)
        self.etcd = EtcdCluster(workdir / "etcd", size=etcd_members)
        self.agents = {
            f"{node_prefix}{i + 1}": AgentProcess(
                addr=NodeAddr.allocate(node_id=f"{node_prefix}{i + 1}", ip=f"127.0.0.{11 + i}"),
                etcd=self.etcd.endpoints, prefix=prefix, state_dir=workdir / "agents", ttl=ttl,
                logdir=workdir,
            )
            for i in range(nodes)
        }

    @property
    def endpoints(self) -> str:
        return self.etcd.endpoints

    @property
    def node_ids(self) -> list[str]:
        return sorted(self.agents)

    def start(self) -> None:
        self.etcd.start()
        for agent in self.agents.values():
            agent.start()

    def stop(self) -> None:
        """Stop every agent (SIGTERM, in parallel), stray nginx groups, etcd; remove containers."""
        for agent in self.agents.values():
            if agent.alive:
                assert agent.proc is not None
                agent.proc.send_signal(signal.SIGTERM)
        for agent in self.agents.values():
            agent.terminate(timeout=30)
            agent.kill_leftover_nginx()
        self.etcd.stop()
        remove_node_containers(self.node_ids)

    def dump_logs(self, lines: int = 40) -> None:
        """Print every agent's log tail to stderr (pytest shows it with a failure)."""
        for agent in self.agents.values():
            print(f"----- {agent.node_id} log tail\n{agent.log_tail(lines)}", file=sys.stderr)

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``python -m daprdockr --etcd E --prefix P ARGS...`` and return its result."""
        result = subprocess.run(
            [sys.executable, "-m", "daprdockr", "--etcd", self.endpoints, "--prefix", self.prefix, *args],
            capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"daprdockr {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def wait_registered(self, nodes: list[str] | None = None, *, timeout: float = 30.0) -> None:
        """Until every given (default: every) agent's node key exists in etcd."""
        want = set(nodes or self.node_ids)
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(
                ["etcdctl", "--endpoints", self.endpoints, "--command-timeout=2s",
                 "get", "--prefix", f"{self.prefix}/nodes/", "--keys-only"],
                capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"},
            ).stdout
            have = {line.rsplit("/", 1)[-1] for line in out.split() if line}
            if want <= have:
                return
            for n in want:
                agent = self.agents[n]
                if not agent.alive:
                    raise RuntimeError(f"agent {n} exited:\n{agent.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"agents {sorted(want - have)} did not register")
            time.sleep(0.1)


@contextlib.contextmanager
def real_cluster(workdir: Path, *, prefix: str, **kw: int | str) -> Iterator[RealCluster]:
    """Started cluster, stopped (and cleaned) on exit; agent log tails are printed on failure."""
    cluster = RealCluster(workdir, prefix=prefix, **kw)  # type: ignore[arg-type]
    try:
        cluster.start()
        cluster.wait_registered()
        yield cluster
    except BaseException:
        cluster.dump_logs()
        raise
    finally:
        cluster.stop()
