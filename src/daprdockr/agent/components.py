"""The agent's parts as typed components: ``start`` / ``run`` / ``stop``, and ``update`` for the
ones that serve the cluster state (DNS and nginx).

The agent holds them in a list in start order and stops them in reverse.  ``run`` is the part's
root task, supervised by the agent (restarted with backoff if it fails); a part with nothing to
supervise waits until it is stopped.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from daprdockr.adapters.sockets import host_networks
from daprdockr.agent.view import DnsView
from daprdockr.core.dns.guard import DEFAULT_RRL, DnsLimits, Network, allowed_networks
from daprdockr.core.dns.stats import DnsStats
from daprdockr.core.removal_tracker import Acknowledgements
from daprdockr.core.state import ClusterState
from daprdockr.dnsserver import DnsServer
from daprdockr.dnsserving.workers import DnsWorkerPool
from daprdockr.errors import DaprDockrError

log = logging.getLogger(__name__)


class Component(Protocol):
    name: str

    async def start(self) -> None: ...

    async def run(self) -> None: ...

    async def stop(self) -> None: ...


class Serving(Component, Protocol):
    """A component that serves the cluster state (it is pushed every routing change)."""

    def update(self, state: ClusterState) -> None: ...


async def idle() -> None:
    """The root task of a component with nothing to supervise."""
    await asyncio.Event().wait()


class Dns:
    """The DNS responder on the agent's address, plus its worker processes (SO_REUSEPORT), and a
    plain responder on each ``also`` address (loopback beside the advertise address; best effort:
    when that address is taken, a warning, and the agent answers on its advertise address only).

    Forwarding (names outside ``.container``) is answered, and no rate limit applies, for
    loopback, this host's own addresses and the network this node's containers use (asked from
    Docker at start: containers attach to Docker's ``bridge`` or the host's network), plus
    ``allow`` (``--dns-allow`` adds, as in ``daprdockr dns``:
    :func:`~daprdockr.core.dns.guard.allowed_networks`).  The processes on the advertise address
    share one response-rate budget per /24 (:meth:`~daprdockr.core.dns.guard.RrlPolicy.shared_by`).
    """

    name = "dns"

    def __init__(
        self, *, listen: tuple[str, int], upstreams: Sequence[tuple[str, int]], ttl: int, workers: int,
        allow: Sequence[Network], container_networks: Callable[[], Awaitable[list[str]]],
        state: Callable[[], ClusterState], also: Sequence[tuple[str, int]] = (),
        acks: Acknowledgements | None = None,
    ) -> None:
        self.listen = listen
        self.also = tuple(also)
        self.extra: list[DnsServer] = []
        self.upstreams = list(upstreams)
        self.ttl = ttl
        self.workers = workers
        self.allow = tuple(allow)
        self.container_networks = container_networks
        self.state = state
        self.acks = acks  # where the worker processes acknowledge (the agent's own responders serve at once)
        self.server: DnsServer | None = None
        self.pool: DnsWorkerPool | None = None

    async def _allowed(self) -> tuple[Network, ...]:
        """Loopback, this host's own addresses (the host and its host-network containers), the
        subnets of the Docker network this node's containers attach to, and ``allow``."""
        containers = [ipaddress.ip_network(n, strict=False) for n in await self.container_networks()]
        return allowed_networks(self.allow, host=host_networks(), containers=containers)

    def limits(self, allow: Sequence[Network]) -> DnsLimits:
        """The limits of every DNS process on the advertise address: one rate budget per /24 for
        all of them (each process its share: queries are spread over them at random)."""
        return DnsLimits(allow=tuple(allow), rrl=DEFAULT_RRL.shared_by(self.workers + 1))

    async def start(self) -> None:
        limits = self.limits(await self._allowed())
        server = self.server = DnsServer(listen=self.listen, upstreams=self.upstreams or None, ttl=self.ttl,
                                         limits=limits, siblings=self.also, priority_socket=True)
        await server.start()
        server.update(self.state())
        if self.workers > 0:
            pool = self.pool = DnsWorkerPool(listen=(self.listen[0], server.port), upstreams=server.upstreams,
                                             ttl=self.ttl, count=self.workers, limits=limits, acks=self.acks)
            pool.update(self.state())
            await pool.start()
        server.spread_queries(members=self.workers + 1)  # (allowed clients to a socket of their own)
        for addr in self.also:  # best effort: the advertise address is the one that must work
            extra = DnsServer(listen=addr, upstreams=server.upstreams, ttl=self.ttl, limits=limits,
                              siblings=((self.listen[0], server.port),))
            try:
                await extra.start()
            except DaprDockrError as exc:
                log.warning("DNS on %s:%d not started (%s); answering on %s:%d only", *addr, exc, self.listen[0],
                            server.port)
                continue
            extra.update(self.state())
            self.extra.append(extra)

    async def run(self) -> None:
        await (self.pool.run() if self.pool is not None else idle())

    async def stop(self) -> None:
        for extra in self.extra:
            await extra.stop()
        if self.server is not None:
            await self.server.stop()
        if self.pool is not None:
            await self.pool.stop()

    def update(self, state: ClusterState) -> None:
        if self.server is not None:
            self.server.update(state)
        if self.pool is not None:
            self.pool.update(state)
        for extra in self.extra:
            extra.update(state)

    def view(self) -> DnsView | None:
        if self.server is None:
            return None
        total: DnsStats = self.server.stats_snapshot()
        if self.pool is not None:
            total.add(self.pool.stats_total())
        for extra in self.extra:
            total.add(extra.stats_snapshot())
        return DnsView(address=f"{self.listen[0]}:{self.server.port}",
                       workers_alive=self.pool.alive if self.pool else 0, workers=self.workers,
                       queries=total.queries, cache_hits=total.cache_hits, forwarded=total.forwarded,
                       limited=total.limited, answers=dict(total.answers))
