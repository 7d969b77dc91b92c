"""Health checks of this node's containers: the agent's ``health`` task.

The owning agent runs each service's check against each of its running containers: an HTTP GET
(one connection per check, closed after it: a kept-alive checker connection would hold up the
connection drain before a container stops) or a TCP connect to the published port on the
agent's advertise address (the connection must not be closed at once: Docker's userland proxy
accepts every connect and closes it when nothing listens in the container; a server that sends
something, or nothing, for :data:`TCP_SETTLE` seconds passes), a command run in the container, or
Docker's own HEALTHCHECK status (a hollow node's runtime answers http and tcp checks itself:
``network``).  Results feed the pure state machine in
:mod:`daprdockr.core.health`, whose ``start_period`` counts from when the container was created
(not from when this agent first saw it); when a container's status changes, ``on_change`` is
called and the reconciler writes the new status into the instance record (only on change, never
per check).  DNS and nginx serve an instance with a check only while it is ``healthy``.

Until a container's first verdict (``healthy`` or ``unhealthy``) its health is *unknown*
(:meth:`HealthMonitor.health_of` returns None) and its record keeps what it says: an agent that
restarts does not pull its healthy instances out of DNS and nginx until their first check.  A
container still running an older version (mid-rollout) is checked with its own version's check,
found in the specs this agent saw or in the service's history (the last 10 versions); a version
older than that is unknown too.

:meth:`HealthMonitor.check_once` is also used by rolling updates to decide whether a replacement
container is healthy before it takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Protocol

import aiohttp

from daprdockr.cancellation import within
from daprdockr.core.containers import ContainerInfo, LocalContainers
from daprdockr.core.health import HealthState, PerContainerHealth, due, observe, restart_due
from daprdockr.core.instance_index import changed_keys
from daprdockr.core.lifecycle import HealthCheck
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import Health
from daprdockr.core.rollout import HistoryEntry
from daprdockr.errors import DaprDockrError, ValidationError

log = logging.getLogger(__name__)
FORGET_AFTER = 5.0  # seconds a state of a container no longer listed is kept
TCP_SETTLE = 0.2  # seconds a TCP check's connection must stay open (not closed at once by a proxy)


# answers an http or tcp check without a connection (the hollow runtime: nothing listens)
NetworkCheck = Callable[[ContainerInfo, HealthCheck], Awaitable[bool]]


class CheckRuntime(Protocol):
    async def exec_ok(self, container_id: str, cmd: Sequence[str], *, within: float) -> bool: ...

    async def docker_health(self, container_id: str) -> str: ...


class HealthMonitor(PerContainerHealth):
    def __init__(
        self, *, runtime: CheckRuntime, address: str,
        containers: Callable[[], Sequence[ContainerInfo]],
        specs: Callable[[], Mapping[ServiceName, ServiceSpec]],
        history: Callable[[], Mapping[ServiceName, Mapping[int, HistoryEntry]]] = dict,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        tick: float = 0.2,
        network: NetworkCheck | None = None,
    ) -> None:
        self.runtime = runtime
        self.network = network  # http and tcp checks go here instead of to the published port
        self.address = address
        self.containers = containers
        self.specs = specs
        self.history = history
        self.on_change = on_change
        self.clock = clock
        self.wall = wall  # container creation times are wall-clock seconds
        self.tick = tick
        self.states: dict[str, HealthState] = {}
        # runtime hash -> the check of that spec version: a container still running an older
        # version (mid-rollout) is checked with its own version's check, not the new one's
        self._by_hash: dict[str, HealthCheck | None] = {}
        self._learned_from: Mapping[ServiceName, ServiceSpec] = {}
        self._history_read: dict[ServiceName, Mapping[int, HistoryEntry]] = {}  # history mapping last learned
        self._running: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        # what :meth:`observed` last answered, and from what: the monitor's generation (bumped by
        # a status change or a newly known version), the listing, the specs and the history
        self.generation = 0
        self._unhealthy: dict[str, ServiceName] = {}  # unhealthy containers' services (restart candidates)
        self._seen: tuple[int, LocalContainers, Mapping[ServiceName, ServiceSpec], object] | None = None
        self._health: dict[str, Health] = {}
        # services with no check to run, and the group and spec that showed it (see _may_check)
        self._unchecked: dict[ServiceName, tuple[tuple[ContainerInfo, ...], ServiceSpec | None]] = {}

    def learn(self, spec: ServiceSpec) -> None:
        if self._by_hash.get(spec.runtime_hash, False) != spec.health:  # (None is a known "no check")
            self.generation += 1
        self._by_hash[spec.runtime_hash] = spec.health
        if len(self._by_hash) > 4096:  # bounded: forget the oldest versions
            for old in list(self._by_hash)[:2048]:
                del self._by_hash[old]

    def _version_check(self, container: ContainerInfo, spec: ServiceSpec) -> tuple[bool, HealthCheck | None]:
        """``(known, check)`` of the spec version ``container`` runs: the desired one, one this
        agent saw, or one in the service's history; ``known`` is False for a version older than all."""
        if container.spec_hash == spec.runtime_hash:
            return True, spec.health
        if container.spec_hash not in self._by_hash:
            self._learn_history(spec.name)
        if container.spec_hash in self._by_hash:
            return True, self._by_hash[container.spec_hash]
        return False, None

    def _learn_history(self, name: ServiceName) -> None:
        entries = self.history().get(name)
        if not entries or self._history_read.get(name) is entries:
            return
        self._history_read[name] = entries
        for entry in entries.values():
            try:
                self.learn(ServiceSpec.from_dict(entry.spec, name=name))
            except ValidationError as exc:
                log.debug("history version %d of %s is not a valid spec: %s", entry.version, name, exc)

    def check_for(self, container: ContainerInfo, spec: ServiceSpec) -> HealthCheck | None:
        """The check of the spec version ``container`` runs (``None``: it has none, or the version
        is unknown)."""
        return self._version_check(container, spec)[1]

    def health_of(self, container: ContainerInfo, spec: ServiceSpec) -> Health | None:
        """What the instance record should say: "" without a check, else the container's status;
        None while that is unknown (no verdict yet, or a version older than the history): the
        record keeps what it says."""
        known, check = self._version_check(container, spec)
        if not known:
            return None
        if check is None:
            return ""
        state = self.states.get(container.id)
        return state.status if state is not None and state.status != "starting" else None

    def observed(
        self, containers: LocalContainers, specs: Mapping[ServiceName, ServiceSpec],
    ) -> tuple[Mapping[str, Health], frozenset[str]]:
        """What each serving container's record should say about its health (unknown ones left
        out: the record keeps what it says), and the containers due for an unhealthy restart.

        Kept between calls: redone for every container only when the history or the monitor's
        generation changed; for a new listing or specs mapping, only the containers of the
        services whose containers or spec changed; the restarts look at the unhealthy ones alone."""
        history = self.history()
        seen = self._seen
        gen = self.generation  # (before: a version learned while looking makes the next call look again)
        if seen is None or seen[0] != gen or seen[3] is not history:
            self._health = {}
            redo: Sequence[ContainerInfo] = containers
        else:
            changed = changed_keys(seen[2], specs)
            if seen[1] is not containers:
                changed |= changed_keys(seen[1].by_service, containers.by_service)
            redo = containers.of(changed)
            gone = seen[1].of(changed)
            if redo or gone:
                self._health = dict(self._health)  # (a new mapping: the last pass's inputs keep theirs)
            for c in gone:
                self._health.pop(c.id, None)
        for c in redo:
            spec = specs.get(c.service)
            if spec is not None and c.serving and (status := self.health_of(c, spec)) is not None:
                self._health[c.id] = status
        self._seen = (gen, containers, specs, history)
        restart: set[str] = set()
        if self._unhealthy:
            for c in containers.of(set(self._unhealthy.values())):
                spec = specs.get(c.service)
                if spec is not None and c.serving and c.id in self._unhealthy and self.restart_due(c, spec):
                    restart.add(c.id)
        return self._health, frozenset(restart)

    def restart_due(self, container: ContainerInfo, spec: ServiceSpec) -> bool:
        check = self.check_for(container, spec)
        state = self.states.get(container.id)
        return check is not None and state is not None and restart_due(state, now=self.clock(), check=check)

    def _new_state(self, c: ContainerInfo, now: float) -> HealthState:
        """A container's first state: ``start_period`` counts from its creation (an agent that
        restarts does not give its old containers a new start period)."""
        age = max(0.0, self.wall() - c.created) if c.created > 0 else 0.0
        return HealthState(started_at=now - age, since=now)

    async def probe(self, container: ContainerInfo, spec: ServiceSpec) -> bool:
        """Check ``container`` now (a replacement waiting to take over), feeding its state like a
        periodic check; True without a check."""
        check = self.check_for(container, spec)
        if check is None:
            return True
        return await self._check(container, check)

    async def check_once(self, container: ContainerInfo, check: HealthCheck) -> bool:
        """One check of ``container``; never raises."""
        try:
            if check.kind == "docker":
                return await within(self.runtime.docker_health(container.id), check.timeout) == "healthy"
            if check.kind == "cmd":
                return await self.runtime.exec_ok(container.id, check.cmd, within=check.timeout)
            if self.network is not None:
                return await within(self.network(container, check), check.timeout)
            port = dict(container.ports).get(f"{check.port}/tcp")
            if port is None:
                return False
            if check.kind == "tcp":
                async with asyncio.timeout(check.timeout):
                    reader, writer = await asyncio.open_connection(self.address, port)
                    try:
                        # behind Docker's userland proxy a connect always succeeds; with nothing
                        # listening in the container the proxy closes the connection at once
                        closed = False
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(min(TCP_SETTLE, check.timeout / 2)):
                                closed = await reader.read(1) == b""
                    finally:
                        writer.close()
                        with contextlib.suppress(OSError):
                            await writer.wait_closed()
                return not closed
            if self._session is None or self._session.closed:
                # a connection per check, closed after it: a kept-alive one would count as an open
                # client connection and hold up the drain before the container stops
                self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
            url = f"http://{self.address}:{port}{check.path}"
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=check.timeout),
                                         allow_redirects=False) as resp:
                return 200 <= resp.status < 400
        except (TimeoutError, OSError, aiohttp.ClientError, DaprDockrError):
            return False

    async def _check(self, c: ContainerInfo, check: HealthCheck) -> bool:
        ok = await self.check_once(c, check)
        now = self.clock()
        old = self.states.get(c.id) or self._new_state(c, now)
        new = observe(old, ok=ok, now=now, check=check)
        self.states[c.id] = new
        if new.status == "unhealthy":
            self._unhealthy[c.id] = c.service
        else:
            self._unhealthy.pop(c.id, None)
        if new.status != old.status:
            self.generation += 1
            log.info("%s/%s (container %s) is %s", c.service, c.number, c.id[:12], new.status)
            self.on_change()
        return ok

    async def _periodic(self, c: ContainerInfo, check: HealthCheck) -> None:
        await self._check(c, check)

    def check_due_once(self) -> int:
        """Start the checks that are due; returns how many were started."""
        specs = self.specs()
        now = self.clock()
        live: set[str] = set()
        started = 0
        if specs is not self._learned_from:  # the mirror hands out a new mapping only on a change
            before, self._learned_from = self._learned_from, specs
            for name, known in specs.items():
                if before.get(name) is not known:  # (and keeps the specs that did not change)
                    self.learn(known)
        for c in self._may_check(self.containers(), specs):
            spec = specs.get(c.service)
            check = self.check_for(c, spec) if spec is not None else None
            if not c.serving or check is None:
                continue
            live.add(c.id)
            state = self.states.get(c.id) or self.states.setdefault(c.id, self._new_state(c, now))
            task = self._running.get(c.id)
            if (task is None or task.done()) and due(state, now=now, check=check):
                self._running[c.id] = asyncio.create_task(self._periodic(c, check), name=f"health {c.id[:12]}")
                started += 1
        for gone in set(self.states) - live:  # containers that stopped or lost their check
            if now - self.states[gone].checked_at > FORGET_AFTER:  # (a replacement probed before it is listed stays)
                self.states.pop(gone, None)
                self._running.pop(gone, None)
                self._unhealthy.pop(gone, None)
                self.generation += 1
        return started

    def _may_check(self, containers: Sequence[ContainerInfo],
                   specs: Mapping[ServiceName, ServiceSpec]) -> Iterable[ContainerInfo]:
        """The containers that may have a check: a service whose spec has none and whose containers
        all run that spec's version is skipped whole (a look per service, not per container)."""
        if not isinstance(containers, LocalContainers):
            return containers
        out: list[ContainerInfo] = []
        unchecked: dict[ServiceName, tuple[tuple[ContainerInfo, ...], ServiceSpec | None]] = {}
        for name, group in containers.by_service.items():
            spec = specs.get(name)
            seen = self._unchecked.get(name)
            if (seen is not None and seen[0] is group and seen[1] is spec) or spec is None or (
                    spec.health is None and all(c.spec_hash == spec.runtime_hash for c in group)):
                unchecked[name] = (group, spec)  # (the same group and spec next time: no look at all)
                continue
            out.extend(group)
        self._unchecked = unchecked
        return out

    async def run(self) -> None:
        try:
            while True:
                self.check_due_once()
                await asyncio.sleep(self.tick)
        finally:
            for task in self._running.values():
                task.cancel()
            if self._session is not None:
                await self._session.close()
