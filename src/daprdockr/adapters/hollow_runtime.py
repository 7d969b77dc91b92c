"""A container runtime without Docker, for hollow nodes (``daprdockr agent --runtime hollow``).

Like Kubernetes' kubemark: the agent runs for real (etcd lease, the race, placement, writes,
DNS, nginx when enabled), only its containers are records in memory.  A "container" is a
:class:`~daprdockr.core.containers.ContainerInfo` whose published ports are numbers taken from a
counter (nothing listens on them, no socket is opened per instance).  Starts take
``start_delay`` seconds and fail with the same :class:`~daprdockr.errors.ContainerError` as a
Docker start that exits at once, for a ``failure_rate`` fraction of tries (seeded RNG with
``seed``).  Every change is announced on :meth:`HollowRuntime.events` in the shape of Docker's
container events (``start``, ``die``, ``destroy``), so the agent's event-driven path runs as it
does with Docker.

Health checks: a ``cmd`` check and Docker's HEALTHCHECK pass while the container runs (unless
``checks_pass`` is False or :meth:`HollowRuntime.set_healthy` says otherwise); ``http`` and
``tcp`` checks are answered by :meth:`HollowRuntime.network_check` the same way, instead of a
connection to a port where nothing listens.  Connections to drain: none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

from daprdockr.core.containers import ContainerInfo, container_labels, container_name
from daprdockr.core.lifecycle import HealthCheck
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.errors import ContainerError

log = logging.getLogger(__name__)
EVENT_BACKLOG = 256  # events kept per subscriber that has not read them (then dropped: one wakes it)


@dataclass(frozen=True, slots=True, kw_only=True)
class HollowOptions:
    """How a hollow node's containers behave (``--hollow-*`` flags)."""

    start_delay: float = 0.0  # seconds a start (and a start again) takes
    failure_rate: float = 0.0  # fraction of starts that fail (0..1)
    seed: int | None = None  # for the failure draws; None: unseeded
    checks_pass: bool = True  # health checks of running containers pass
    first_port: int = 20000  # published ports count up from here (wrapping below 65536)

    def __post_init__(self) -> None:
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError(f"failure_rate {self.failure_rate} is not within 0..1")
        if self.start_delay < 0:
            raise ValueError(f"start_delay {self.start_delay} is negative")
        if not 1024 <= self.first_port < 65536:
            raise ValueError(f"first_port {self.first_port} is not within 1024..65535")


@dataclass(frozen=True, slots=True)
class _Container:
    info: ContainerInfo
    name: str
    started: float = 0.0  # time.monotonic() of its last start (its run time once it exits)


class HollowRuntime:
    """The agent's runtime for one hollow node: containers in memory, no Docker, no sockets."""

    def __init__(self, *, node_id: str, advertise_ip: str, options: HollowOptions | None = None) -> None:
        self.node_id = node_id
        self.advertise_ip = advertise_ip
        self.options = options or HollowOptions()
        self._rng = random.Random(self.options.seed)
        self._containers: dict[str, _Container] = {}
        self._by_name: dict[str, str] = {}  # container name -> id (a name is unique, as in Docker)
        self._next_port = self.options.first_port
        self._subscribers: list[asyncio.Queue[dict[str, object] | None]] = []
        self._unhealthy: set[str] = set()  # ids set_healthy(False) marked
        self.starts = 0  # starts tried (start_instance and restart_instance)
        self.failures = 0  # of those, failed on purpose

    # ------------------------------------------------------------------ engine
    async def ping(self) -> None:
        """Always answers: there is no engine to lose."""

    async def close(self) -> None:
        """Ends every event stream (the containers stay, as Docker's do when the agent exits)."""
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()  # (an event less: the reader is told to end either way)
            queue.put_nowait(None)
        self._subscribers.clear()

    async def container_networks(self) -> list[str]:
        return []

    async def events(self) -> AsyncIterator[dict[str, object]]:
        """Container events of this node, in Docker's shape, until :meth:`close`."""
        queue: asyncio.Queue[dict[str, object] | None] = asyncio.Queue(EVENT_BACKLOG)
        self._subscribers.append(queue)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(queue)

    def _emit(self, action: str, c: _Container) -> None:
        info = c.info
        event: dict[str, object] = {
            "Type": "container", "Action": action, "status": action, "id": info.id, "time": int(time.time()),
            "Actor": {"ID": info.id, "Attributes": {"name": c.name, **container_labels(
                node_id=self.node_id, service=info.service, number=info.number, spec_hash=info.spec_hash)}},
        }
        for queue in self._subscribers:
            with contextlib.suppress(asyncio.QueueFull):  # a full queue wakes its reader anyway
                queue.put_nowait(event)

    # ------------------------------------------------------------------ containers
    def _ports(self, spec: ServiceSpec) -> tuple[tuple[str, int], ...]:
        ports = []
        for port in spec.container_ports():
            ports.append((str(port), self._next_port))
            self._next_port = self._next_port + 1 if self._next_port < 65535 else self.options.first_port
        return tuple(sorted(ports))

    async def _start_delay(self, what: str) -> None:
        if self.options.start_delay > 0:
            await asyncio.sleep(self.options.start_delay)
        self.starts += 1
        if self.options.failure_rate and self._rng.random() < self.options.failure_rate:
            self.failures += 1
            raise ContainerError(f"{what} exited right after start (hollow: simulated failure)", transient=True)

    async def list_managed(self) -> list[ContainerInfo]:
        return [c.info for c in self._containers.values()]

    async def start_instance(self, *, spec: ServiceSpec, number: int, beside: bool = False) -> ContainerInfo:
        """A new running container of instance ``number`` after ``start_delay``; a container left
        with the same name is removed first (as Docker's create conflict is repaired)."""
        name = container_name(node_id=self.node_id, service=spec.name, number=number)
        if beside:
            name = f"{name}.{spec.runtime_hash[:12]}"
        if (old := self._by_name.get(name)) is not None:
            await self.remove(old, grace=0)
        await self._start_delay(name)
        info = ContainerInfo(id=secrets.token_hex(32), service=spec.name, number=number, node=self.node_id,
                             spec_hash=spec.runtime_hash, running=True, ports=self._ports(spec), created=time.time())
        entry = self._containers[info.id] = _Container(info=info, name=name, started=time.monotonic())
        self._by_name[name] = info.id
        self._emit("start", entry)
        return info

    async def restart_instance(self, container: ContainerInfo, *, spec: ServiceSpec) -> ContainerInfo:
        """Start a stopped container again (``docker start``), keeping its ports."""
        entry = self._containers.get(container.id)
        if entry is None:
            raise ContainerError(f"hollow start {container.id[:12]}: No such container", transient=False)
        await self._start_delay(entry.name)
        entry = self._containers[container.id] = replace(
            entry, info=replace(entry.info, running=True, paused=False, ran_for=None), started=time.monotonic())
        self._emit("start", entry)
        return entry.info

    async def restart_container(
        self, container: ContainerInfo, *, spec: ServiceSpec, grace: float, signal: str | None = None
    ) -> ContainerInfo:
        """An operator's restart: the container stops (``die``) and starts again, same id."""
        if not self.crash(container.id):
            raise ContainerError(f"hollow restart {container.id[:12]}: not running", transient=False)
        return await self.restart_instance(container, spec=spec)

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        entry = self._containers.get(container_id)
        return entry.info if entry is not None else None

    async def remove(self, container_id: str, *, grace: float, signal: str | None = None) -> None:
        """Stop and delete at once (nothing to wait for); absent is fine."""
        entry = self._containers.pop(container_id, None)
        self._unhealthy.discard(container_id)
        if entry is None:
            return
        if self._by_name.get(entry.name) == container_id:
            del self._by_name[entry.name]
        if entry.info.running:
            self._emit("die", entry)
        self._emit("destroy", entry)

    async def drain(self, container: ContainerInfo, *, within: float) -> int:
        return 0  # no connections: nothing listens on a hollow container's ports

    async def find_instance(self, *, service: ServiceName, number: int) -> ContainerInfo | None:
        found = [c.info for c in self._containers.values() if c.info.key == (service, number)]
        return max(found, key=lambda c: (c.running, c.created), default=None)

    async def logs(self, container_id: str, *, tail: int = 100, follow: bool = False) -> AsyncIterator[str]:
        """Two lines saying what the container is (``follow`` ends after them too)."""
        entry = self._containers.get(container_id)
        if entry is None:
            raise ContainerError(f"hollow logs {container_id[:12]}: No such container", transient=False)
        lines = [f"hollow container {entry.name} on node {self.node_id}\n",
                 f"{'running' if entry.info.running else 'exited'}, ports {dict(entry.info.ports)}\n"]
        for line in lines[-tail:] if tail else []:
            yield line

    # ------------------------------------------------------------------ health
    def _healthy(self, container_id: str) -> bool:
        entry = self._containers.get(container_id)
        return (entry is not None and entry.info.serving and self.options.checks_pass
                and container_id not in self._unhealthy)

    async def exec_ok(self, container_id: str, cmd: Sequence[str], *, within: float) -> bool:
        return self._healthy(container_id)

    async def docker_health(self, container_id: str) -> str:
        return "healthy" if self._healthy(container_id) else "unhealthy"

    async def network_check(self, container: ContainerInfo, check: HealthCheck) -> bool:
        """An ``http`` or ``tcp`` check, answered without a connection."""
        return self._healthy(container.id) and f"{check.port}/tcp" in dict(container.ports)

    # ------------------------------------------------------------------ for tests
    def set_healthy(self, container_id: str, healthy: bool) -> None:
        """Make one container's checks fail (False) or pass again (True)."""
        if healthy:
            self._unhealthy.discard(container_id)
        else:
            self._unhealthy.add(container_id)

    def crash(self, container_id: str) -> bool:
        """The container's program exits (``die``): it stays, stopped, as Docker keeps it."""
        entry = self._containers.get(container_id)
        if entry is None or not entry.info.running:
            return False
        ran_for = time.monotonic() - entry.started
        entry = self._containers[container_id] = replace(
            entry, info=replace(entry.info, running=False, paused=False, ran_for=ran_for))
        self._emit("die", entry)
        return True

    @property
    def containers(self) -> list[ContainerInfo]:
        return [c.info for c in self._containers.values()]
