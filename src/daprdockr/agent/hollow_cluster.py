"""Several hollow agents in one process and one event loop, for benchmarks and CI.

Each is a real :class:`~daprdockr.agent.main.Agent` (its own etcd client, lease, mirror,
reconciler) with a :class:`~daprdockr.adapters.hollow_runtime.HollowRuntime`, node id
``<prefix><i>`` and advertise address ``127.0.0.<first_ip + i - 1>``.  DNS, nginx and the API are
off unless ports are given (then each listens on its own loopback address, so one port serves
every node).

What an agent process has once and these agents share: signal handlers are not installed here
(:func:`run_hollow_cluster` takes the stop event; wrap it in
:func:`~daprdockr.adapters.process.run_until_signal` for a process); log records name their node
(a context variable set in each agent's root task, read by a record factory installed while the
cluster runs); the process metrics (RSS, CPU) each API reports are the whole process's.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType

from daprdockr.adapters.hollow_runtime import HollowOptions, HollowRuntime
from daprdockr.agent.config import AgentConfig
from daprdockr.agent.main import Agent
from daprdockr.core.endpoints import Endpoint

log = logging.getLogger(__name__)
NODE: contextvars.ContextVar[str] = contextvars.ContextVar("daprdockr_node", default="")


def hollow_configs(
    *, nodes: int, etcd: tuple[Endpoint, ...], prefix: str, state_dir: Path, node_prefix: str = "h",
    first_ip: int = 11, options: HollowOptions | None = None, ttl: int = 5, capacity: int = 0,
    api_port: int | None = None, dns_port: int | None = None, release_on_exit: bool = True,
) -> list[AgentConfig]:
    """``nodes`` hollow agent configurations; a seed in ``options`` is varied per node (+i)."""
    opts = options or HollowOptions()
    configs = []
    for i in range(nodes):
        ip = ipaddress.IPv4Address("127.0.0.0") + first_ip + i
        if ip not in ipaddress.IPv4Network("127.0.0.0/8") or ip.packed[-1] in (0, 255):
            raise ValueError(f"node {i + 1} would advertise {ip}: not a loopback host address")
        configs.append(AgentConfig(
            node_id=f"{node_prefix}{i + 1}", advertise_ip=str(ip), etcd=etcd, prefix=prefix, ttl=ttl,
            capacity=capacity, state_dir=state_dir, runtime="hollow",
            hollow=opts if opts.seed is None else replace(opts, seed=opts.seed + i),
            dns_listen=None if dns_port is None else (str(ip), dns_port), dns_workers=0,
            http_listen=None, api_listen=None if api_port is None else (str(ip), api_port),
            release_on_exit=release_on_exit, stop_timeout=0.0,
        ))
    return configs


@contextlib.contextmanager
def node_log_records() -> Iterator[None]:
    """While inside: a log record made in a hollow agent's tasks starts with ``[<node>] ``."""
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        node = NODE.get()
        if node and isinstance(record.msg, str):
            record.msg = f"[{node}] {record.msg}"
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


class HollowCluster:
    """``async with HollowCluster(configs) as cluster``: every agent started and registered; on
    exit they stop together (each in its ordered shutdown)."""

    def __init__(self, configs: Sequence[AgentConfig]) -> None:
        if any(c.runtime != "hollow" for c in configs):
            raise ValueError("a hollow cluster runs hollow agents only")
        self.agents = [Agent(c) for c in configs]
        self.stop = asyncio.Event()
        self._tasks: list[asyncio.Task[int]] = []
        self._logs = contextlib.ExitStack()

    def runtime(self, node_id: str) -> HollowRuntime:
        """The in-memory runtime of one node (its containers, its counters)."""
        for agent in self.agents:
            if agent.config.node_id == node_id and isinstance(agent.runtime, HollowRuntime):
                return agent.runtime
        raise KeyError(node_id)

    @property
    def runtimes(self) -> dict[str, HollowRuntime]:
        return {a.config.node_id: self.runtime(a.config.node_id) for a in self.agents}

    async def start(self, *, within: float = 30.0) -> None:
        """Start every agent; returns once each holds a lease (raises if one ended or it took too long)."""
        self._logs.enter_context(node_log_records())
        loop = asyncio.get_running_loop()
        for agent in self.agents:
            ctx = contextvars.copy_context()
            ctx.run(NODE.set, agent.config.node_id)
            self._tasks.append(loop.create_task(agent.run(self.stop), name=agent.config.node_id, context=ctx))
        deadline = time.monotonic() + within
        while not all(a.heartbeat.lease for a in self.agents):
            ended = [t.get_name() for t in self._tasks if t.done()]
            if ended or time.monotonic() > deadline:
                await self.close()
                raise RuntimeError(f"hollow agents did not start: ended {ended}, deadline {within}s")
            await asyncio.sleep(0.05)
        log.info("%d hollow agents up", len(self.agents))

    async def close(self) -> list[int]:
        """Stop every agent and wait for them; returns their exit codes."""
        self.stop.set()
        try:
            results = await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            self._logs.close()
        return [r if isinstance(r, int) else 1 for r in results]

    async def __aenter__(self) -> HollowCluster:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


async def run_hollow_cluster(configs: Sequence[AgentConfig], stop: asyncio.Event,
                             on_started: Callable[[HollowCluster], None] = lambda c: None) -> int:
    """Run the hollow agents until ``stop`` is set; 0 when every one exited cleanly."""
    cluster = HollowCluster(configs)
    await cluster.start()
    on_started(cluster)
    try:
        await stop.wait()
    finally:
        codes = await cluster.close()
    return max(codes, default=0)
