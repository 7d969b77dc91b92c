"""In-process agents for tests: several simulated hosts on one Docker engine.

Each :class:`LocalAgent` runs a real :class:`~daprdockr.agent.main.Agent` (real etcd, real
dockerd) in the test's event loop with its own node id and advertise address 127.0.0.x.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.agent.config import AgentConfig
from daprdockr.agent.main import Agent
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.state import ClusterState
from daprdockr.errors import StoreUnavailableError


class LocalAgent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.agent = Agent(config)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[int] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.agent.run(self.stop), name=self.config.node_id)
        deadline = time.monotonic() + 15
        while not self.agent.heartbeat.lease:
            if self.task.done():
                raise RuntimeError(f"agent {self.config.node_id} exited: {self.task.result()}")
            if time.monotonic() > deadline:
                raise TimeoutError("agent did not register")
            await asyncio.sleep(0.05)

    async def shutdown(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)


def agent_config(*, etcd: str, prefix: str, node: str, ip: str, tmp: Path, **kw: object) -> AgentConfig:
    return replace(
        AgentConfig(node_id=node),
        advertise_ip=ip,
        etcd=parse_endpoints(etcd),
        prefix=prefix,
        ttl=2,
        state_dir=tmp,
        **{"dns_listen": None, "http_listen": None, "api_listen": None, "stop_timeout": 1.0, **kw},  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def local_cluster(
    *, etcd: str, prefix: str, tmp: Path, nodes: int, keep_containers: bool = False,
    node_prefix: str = "n", per_node: Callable[[int, str], dict[str, object]] | None = None, first_ip: int = 11,
    **kw: object
) -> AsyncIterator[list[LocalAgent]]:
    agents = [
        LocalAgent(agent_config(
            etcd=etcd, prefix=prefix, node=f"{node_prefix}{i + 1}", ip=f"127.0.0.{first_ip + i}", tmp=tmp,
            **kw, **(per_node(i, f"127.0.0.{first_ip + i}") if per_node else {}),
        ))
        for i in range(nodes)
    ]
    try:
        for a in agents:
            await a.start()
        yield agents
    finally:
        await asyncio.gather(*(a.shutdown() for a in agents), return_exceptions=True)
        if not keep_containers:
            remove_node_containers([a.config.node_id for a in agents])


def remove_node_containers(nodes: list[str]) -> None:
    """Belt and braces: remove leftover test containers of these nodes."""
    for node in nodes:
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=daprdockr.node={node}"],
            capture_output=True, text=True,
        ).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


async def wait_for(
    store: EtcdStore, predicate: Callable[[ClusterState], bool], *, timeout: float = 30.0
) -> ClusterState:
    """Poll etcd until ``predicate(state)`` holds; returns that state or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    state: ClusterState | None = None
    while True:
        try:
            state = await store.snapshot()
        except StoreUnavailableError:
            state = None  # etcd restarting in a chaos/outage test: keep polling
        if state is not None and predicate(state):
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s; last state: {state}")
        await asyncio.sleep(0.1)


def spawn_agent(
    *, etcd: str, prefix: str, node: str, ip: str, state_dir: Path, ttl: int = 2, extra: tuple[str, ...] = (),
    global_options: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """A real agent process (``python -m daprdockr [global_options] agent ... [extra]``), for tests
    that SIGKILL it or read its log (``<state_dir>/<node>.log``)."""
    import os
    import sys

    log = open(state_dir / f"{node}.log", "ab")  # noqa: SIM115 - lives with the process
    return subprocess.Popen(
        [
            sys.executable, "-m", "daprdockr", *global_options, "agent",
            "--node-id", node, "--advertise-ip", ip, "--ttl", str(ttl),
            "--state-dir", str(state_dir),
            "--dns-listen", "off", "--http-listen", "off", "--api-listen", "off",
            *extra,
        ],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "DAPRDOCKR_ETCD": etcd, "DAPRDOCKR_PREFIX": prefix},
    )


def kill_spawned(proc: subprocess.Popen[bytes], *, state_dir: Path, node: str) -> None:
    """SIGKILL a spawned agent and the nginx it leaves behind (nginx runs in its own session)."""
    import os
    import signal

    from daprdockr.adapters.procs import stale_nginx_group

    proc.kill()
    proc.wait()
    nginx = state_dir / node / "nginx"
    pgid = stale_nginx_group(nginx / "nginx.pid", nginx / "nginx.conf")
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
