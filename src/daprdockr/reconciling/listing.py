"""This node's containers as the reconciler sees them: the cached Docker listing.

The listing is re-read only when it can have changed: a Docker event for this node, one of our
own actions finishing, or the periodic resync.  Etcd events alone (other nodes' claims, DNS-only
changes) re-plan from the cached listing, which keeps the engine free for creates while a large
service converges.  A stale listing is paced (:data:`RELIST_PACE`).  Containers this node started
since a listing began are added to it (:meth:`ContainerListing.observe_started`), so an instance
is served here as soon as its record says ``running``; containers being stopped are left out of
:meth:`ContainerListing.routable` (see :mod:`daprdockr.core.local_view`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from daprdockr.adapters.container_reaper import ContainerReaper
from daprdockr.adapters.docker_runtime import ContainerRuntime
from daprdockr.core.containers import ContainerInfo, LocalContainers
from daprdockr.core.names import ServiceName

RELIST_PACE = 4.0  # a stale listing waits 4 times as long as the last one took (listing <= 20% of the time)


class ContainerListing:
    def __init__(self, *, runtime: ContainerRuntime, reaper: ContainerReaper, clock: Callable[[], float],
                 on_local_change: Callable[[], None]) -> None:
        self.runtime = runtime
        self.reaper = reaper
        self.clock = clock
        self.on_local_change = on_local_change
        self.containers = LocalContainers()
        self.listed = False  # containers were listed at least once (routable() means something)
        self.relist_interval = 2.0
        # self.containers less the reaper's, indexed per service, and what is routable: kept per
        # listing (rebuilt when the list, the reaper or the stopping set changes), not per pass
        self._local: tuple[LocalContainers, frozenset[str], LocalContainers] | None = None  # (source, reaped, result)
        self._routable: tuple[LocalContainers, dict[str, ServiceName], LocalContainers] | None = None  # (, stopping, )
        self._stopping: dict[str, ServiceName] = {}  # containers being stopped (id -> service): no longer routable
        self._paused_since: dict[str, float] = {}  # container id -> when a listing first showed it paused
        self._paused_of: tuple[LocalContainers, LocalContainers] | None = None  # (listing, its paused ones)
        self._stale = True
        self._listed_at = float("-inf")
        self._relist_after = float("-inf")  # a stale listing waits for this (paced: RELIST_PACE)
        # containers started by us (``observe_started``) with a sequence number: a listing begun
        # before a start may finish after it, and must not drop the container until the next one
        self._started: dict[str, tuple[int, ContainerInfo]] = {}
        self._started_seq = 0

    def mark_stale(self) -> None:
        """Docker changed something of ours: re-list on the next pass."""
        self._stale = True

    def wake_at(self) -> float:
        """When a stale listing may be re-read (infinity while the listing is fresh)."""
        return self._relist_after if self._stale else float("inf")

    async def refresh(self) -> frozenset[str] | None:
        """Re-read the listing if it is stale (and its pace allows) or older than
        ``relist_interval``: the ids Docker listed, or None when the cached listing stands."""
        began = self.clock()
        if not ((self._stale and began >= self._relist_after) or began - self._listed_at >= self.relist_interval):
            return None
        self._stale = False
        listing_from = self._started_seq
        try:
            containers = await self.runtime.list_managed()
        except BaseException:
            self._stale = True
            raise
        for c in containers:
            if c.doomed:
                self.reaper.add(c, error="Docker lists it dead or being removed")
        self._listed_at = self.clock()
        # paced: a listing that took long (many containers) is not redone for RELIST_PACE
        # times as long, however many events come (a start of ours is in self._started)
        self._relist_after = self._listed_at + RELIST_PACE * (self._listed_at - began)
        # started since the listing began: the listing may predate the start (or show the
        # container created but not yet running); the next listing is the truth again
        self._started = {i: (seq, c) for i, (seq, c) in self._started.items() if seq > listing_from}
        fresh = LocalContainers([c for c in containers if c.id not in self._started]
                                + [c for _, c in self._started.values()], like=self.containers)
        if fresh != self.containers or not self.listed:
            self.containers = fresh
            self.listed = True
            self.on_local_change()
        return frozenset(c.id for c in containers)

    def local(self) -> LocalContainers:
        """This node's containers the pass plans for (the reaper's left out), indexed by service;
        the same object until the listing or the reaper changes."""
        reaped = self.reaper.ids()
        if not reaped:
            return self.containers
        last = self._local
        if last is None or last[0] is not self.containers or last[1] != reaped:
            touched = {s for c in (reaped ^ last[1] if last else reaped) if (s := self._service_of(c)) is not None}
            out = self.containers.filtered(lambda c: c.id not in reaped, since=last and (last[0], last[2]),
                                           touched=touched)
            self._local = last = (self.containers, reaped, out)
        return last[2]

    def _service_of(self, container_id: str) -> ServiceName | None:
        c = self.containers.by_id.get(container_id)  # (one no longer listed is in no group)
        return c.service if c is not None else None

    def paused_since(self, local: LocalContainers, *, now: float) -> Mapping[str, float]:
        """When a listing first showed each of ``local``'s paused containers paused."""
        if self._paused_of is None or self._paused_of[0] is not local:  # (a new listing: who is paused since when)
            paused = local.filtered(lambda c: c.paused, since=self._paused_of)
            if self._paused_of is None or paused != self._paused_of[1]:
                self._paused_since = {c.id: self._paused_since.get(c.id, now) for c in paused}
            self._paused_of = (local, paused)
        return self._paused_since

    def observe_started(self, info: ContainerInfo) -> None:
        """A container this node just started runs, whatever the last listing said: our own DNS
        and nginx may serve it as soon as its record says so, not only after the next listing
        (which waits for the engine, busy with the creates of a large service)."""
        self._started_seq += 1
        self._started[info.id] = (self._started_seq, info)
        self.containers = self.containers.put(info)
        self.on_local_change()

    @contextmanager
    def stopping(self, c: ContainerInfo) -> Iterator[None]:
        """While ``c`` is being stopped it is not routable (this node's DNS and nginx drop it first)."""
        self._stopping[c.id] = c.service
        self.on_local_change()
        try:
            yield
        finally:
            self._stopping.pop(c.id, None)

    def routable(self) -> LocalContainers:
        """This node's running containers that are not being stopped (for its own DNS and nginx);
        the same object until the listing or the stopping set changes, and worked out again only
        for the services that changed."""
        last = self._routable
        if last is None or last[0] is not self.containers or last[1] != self._stopping:
            stopping = dict(self._stopping)
            touched = {name for _, name in stopping.items() ^ last[1].items()} if last else set()
            out = self.containers.filtered(lambda c: c.serving and c.id not in stopping,
                                           since=last and (last[0], last[2]), touched=touched)
            self._routable = last = (self.containers, stopping, out)
        return last[2]
