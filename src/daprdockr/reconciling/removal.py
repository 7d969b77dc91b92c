"""Release before stop, confirmed: how this node takes a container out of service.

An instance leaves service in etcd first (its key is deleted, or marked ``starting`` before a
replacement); then, if it was routed, we wait until every live agent has applied that etcd
revision to its nginx and DNS (``confirm_removal``, bounded), let its connections drain (bounded),
and only then stop the container.  A container whose key another node now holds is confirmed out
of the routes at the revision that took it out, read from the key's history
(:mod:`daprdockr.core.removal`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from daprdockr.core.containers import ContainerInfo
from daprdockr.core.model import ServiceSpec
from daprdockr.core.records import InstanceRecord
from daprdockr.core.removal import left_routing_at
from daprdockr.errors import DaprDockrError
from daprdockr.reconciling.context import ReconcileContext
from daprdockr.reconciling.parts import Records, Stopping

log = logging.getLogger(__name__)


class ContainerRemoval:
    def __init__(self, *, ctx: ReconcileContext, records: Records, listing: Stopping) -> None:
        self.ctx = ctx
        self.records = records
        self.listing = listing

    async def left_routing_at(self, c: ContainerInfo, *, until: int) -> int:
        """The revision at which the routers took ``c`` out, read from its key's history up to
        ``until`` (the key is held by another node now): 0 when no record ever routed it.  When
        the history cannot be read, ``until`` (the confirmation then waits its bound at most)."""
        if not until:
            return 0
        try:
            events = await self.ctx.store.instance_history(c.service, c.number, until=until)
        except DaprDockrError as exc:
            log.info("history of %s/%s unreadable (%s): confirming its removal at revision %d", c.service,
                     c.number, exc, until)
            return until
        left = left_routing_at(events, c.id)
        if left:
            log.info("container %s of %s/%s left the routes at revision %d", c.id[:12], c.service, c.number, left)
        else:
            log.info("container %s of %s/%s was routed by no record since revision %d: no removal to confirm",
                     c.id[:12], c.service, c.number, events[0].revision if events else until)
        return left

    async def retire(self, rec: InstanceRecord, old: ContainerInfo, *, reason: str,
                     spec: ServiceSpec | None) -> InstanceRecord | None:
        """Take our instance's container ``old`` out of service before it is replaced: the record
        says ``starting`` (out of every router), then confirmed removal, drain and stop.  Returns
        the record as it now stands in etcd (on our lease), or None if the key is no longer ours."""
        removed_at = 0
        if rec.state == "running":
            starting = replace(rec, state="starting", ports=(), since=time.time(), error=reason)
            written = await self.ctx.store.update_instance(starting, lease=self.ctx.lease)
            if not self.records.confirmed(written):
                log.warning("instance %s/%s is no longer ours", rec.service, rec.number)
                return None
            assert written is not None
            removed_at = written.revision
        # an instance that was not routable (unhealthy) left the routers already: nothing to confirm
        await self.take_out(old, removed_at=removed_at, routed=rec.routable, spec=spec)
        return replace(rec, lease=self.ctx.lease)

    async def take_out(self, c: ContainerInfo, *, removed_at: int, routed: bool, spec: ServiceSpec | None,
                       confirmed: Callable[[], Awaitable[None]] | None = None) -> None:
        """Confirmed removal: an instance that was routed leaves every live agent's nginx and DNS
        first (each has applied etcd revision ``removed_at``; bounded; then ``confirmed`` is
        awaited), then its connections drain (bounded), then it gets its stop signal and grace
        period."""
        ctx = self.ctx
        if routed and removed_at:
            await ctx.confirm_removal(removed_at)
            if confirmed is not None:
                await confirmed()
            left = await ctx.runtime.drain(c, within=ctx.drain_timeout)
            if left:
                log.info("%d connection(s) still open to %s/%s after %.1fs; stopping it anyway", left, c.service,
                         c.number, ctx.drain_timeout)
        await self.stop_container(c, grace=ctx.stop_timeout, spec=spec)

    async def stop_container(self, c: ContainerInfo, *, grace: float, spec: ServiceSpec | None) -> None:
        """Stop and remove ``c`` with ``spec``'s stop signal and grace period (``grace`` when the
        spec names none, or there is none; 0 kills at once); it leaves this node's own DNS and
        nginx first."""
        signal = spec.stop_signal if spec is not None else None
        if grace > 0 and spec is not None and spec.stop_timeout is not None:
            grace = spec.stop_timeout
        with self.listing.stopping(c):
            await self.ctx.runtime.remove(c.id, grace=grace, signal=signal)
