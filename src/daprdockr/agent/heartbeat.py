"""The node's heartbeat: one etcd lease, kept alive at TTL/3, carrying ``nodes/<id>``.

Every instance key this node owns is bound to the same lease, so when the agent dies (or is cut
off from etcd for longer than the TTL) its node record and all its claims expire together and
other agents re-run the instances.

The keepalives themselves are sent by a :class:`~daprdockr.adapters.lease_keeper.LeaseKeeper`
from a thread of its own when one is given (a busy loop does not make them late); this loop then
only checks in with it and takes over if its thread ends.

Losing etcd: transient keepalive failures are retried every half second, each attempt bounded
by ``ttl / 5`` per endpoint (so a hung member cannot eat the TTL); containers keep running.
When etcd answers again but the lease is gone (:class:`LeaseLostError`), a new lease is granted,
the node record re-published and ``on_new_lease`` called: the reconciler then re-adopts the
containers whose keys are still free and stops those now held by other nodes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from daprdockr.adapters.lease_keeper import LeaseKeeper
from daprdockr.core.records import NodeRecord
from daprdockr.errors import DaprDockrError, LeaseLostError

log = logging.getLogger(__name__)


class LeaseStore(Protocol):
    async def grant_lease(self, ttl: int) -> int: ...

    async def keepalive(self, lease_id: int, *, attempt_timeout: float | None = None) -> int: ...

    async def revoke_lease(self, lease_id: int) -> int: ...

    async def put_node(self, node: NodeRecord, *, lease: int) -> None: ...


class Heartbeat:
    def __init__(
        self,
        *,
        store: LeaseStore,
        node: NodeRecord,
        ttl: int,
        on_new_lease: Callable[[int], None],
        clock: Callable[[], float] = time.monotonic,
        keeper: LeaseKeeper | None = None,
    ) -> None:
        self.store = store
        self.keeper = keeper  # refreshes the lease from its own thread while its thread runs
        self.node = node
        self.ttl = ttl
        self.on_new_lease = on_new_lease
        self.clock = clock
        self.lease = 0
        self.last_ok = 0.0
        self.failures = 0

    @property
    def interval(self) -> float:
        return max(0.2, self.ttl / 3)

    @property
    def call_timeout(self) -> float:
        """Bound on one keepalive attempt per endpoint: a hung member must not eat the TTL."""
        return max(0.3, self.ttl / 5)

    @property
    def healthy(self) -> bool:
        """True while the lease is certainly alive (a keepalive succeeded within the TTL)."""
        return bool(self.lease) and self.clock() - self.last_ok < self.ttl

    async def register(self) -> int:
        """Grant a fresh lease and publish the node record on it."""
        lease = await self.store.grant_lease(self.ttl)
        await self.store.put_node(self.node, lease=lease)
        self.lease = lease
        self.last_ok = self.clock()
        if self.keeper is not None:
            self.keeper.track(lease)
        log.info("node %s registered with lease %x (ttl %ss)", self.node.node_id, lease, self.ttl)
        self.on_new_lease(lease)
        return lease

    async def beat_once(self) -> None:
        """One keepalive; renews a lost lease (and writes the node record on the new one).

        The node record is written only when a lease is granted: nothing in it changes while the
        agent runs, so an idle cluster makes no writes at all."""
        try:
            if not self.lease:
                await self.register()
                return
            keeper = self.keeper
            if keeper is not None and keeper.running:
                keeper.touch()  # (the loop is alive: the keeper goes on renewing)
                if keeper.lost == self.lease:
                    raise LeaseLostError(f"lease {self.lease:x} is gone")
                self.last_ok = max(self.last_ok, keeper.last_ok)
                return
            await self.store.keepalive(self.lease, attempt_timeout=self.call_timeout)
            self.last_ok = self.clock()
            self.failures = 0
        except LeaseLostError:
            log.warning("lease %x lost; registering again", self.lease)
            self.lease = 0
            await self.register()

    async def run(self) -> None:
        while True:
            try:
                await self.beat_once()
                await asyncio.sleep(self.interval)
            except DaprDockrError as exc:
                self.failures += 1
                log.warning(
                    "heartbeat failed (%d in a row, lease %s): %s",
                    self.failures, "alive" if self.healthy else "possibly expired", exc,
                )
                await asyncio.sleep(min(0.5, self.interval))

    async def release(self) -> int:
        """Revoke the lease: our node record and all our claims vanish at once.  Returns the
        revision of that deletion (0 if there was no lease)."""
        if not self.lease:
            return 0
        if self.keeper is not None:
            self.keeper.track(0)
        revision = await self.store.revoke_lease(self.lease)
        self.lease = 0
        return revision
