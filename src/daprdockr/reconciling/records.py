"""This node's instance records: built from a container, written on our lease, and each confirmed
write's event handed to the agent's mirror (read-your-writes)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from daprdockr.core.containers import ContainerInfo
from daprdockr.core.mirror import WatchEvent
from daprdockr.core.model import ServiceSpec
from daprdockr.core.records import InstanceRecord
from daprdockr.errors import StoreError
from daprdockr.reconciling.context import ReconcileContext

log = logging.getLogger(__name__)


class RecordWriter:
    def __init__(self, *, ctx: ReconcileContext) -> None:
        self.ctx = ctx

    def fresh_record(self, c: ContainerInfo) -> InstanceRecord:
        """A record of ours for container ``c`` with nothing known yet (adopted, or rewritten over
        bad data): :meth:`running_record` fills it in."""
        return InstanceRecord(service=c.service, number=c.number, node=self.ctx.node_id, address=self.ctx.address,
                              state="starting", since=time.time())

    def running_record(self, rec: InstanceRecord, c: ContainerInfo, *, spec: ServiceSpec | None,
                       healthy: bool = False) -> InstanceRecord:
        """``rec`` rewritten from our container ``c``; its health is ``c``'s under ``spec``'s check (the
        spec the action was planned from; None: the service is frozen or gone, the record's is kept)."""
        ctx = self.ctx
        health = ctx.health.health_of(c, spec) if spec is not None else rec.health
        if health is None:  # no verdict yet: what the record says of this container, else starting
            health = rec.health if rec.container_id == c.id and rec.health else "starting"
        if healthy and health:  # it just passed its checks for min_healthy (a replacement)
            health = "healthy"
        return replace(
            rec, node=ctx.node_id, address=ctx.address, state="paused" if c.paused else "running", ports=c.ports,
            container_id=c.id, spec_hash=c.spec_hash, error="", health=health,
            since=rec.since if rec.state == "running" and rec.container_id == c.id else time.time(),
        )

    def confirmed(self, written: WatchEvent | None) -> bool:
        """Hand a confirmed write's event to the agent's mirror (read-your-writes), after the
        store call returned: a failure there is never mistaken for an etcd failure."""
        if written is None:
            return False
        self.ctx.on_written(written)
        return True

    async def write(self, rec: InstanceRecord) -> bool:
        ok = self.confirmed(await self.ctx.store.update_instance(rec, lease=self.ctx.lease))
        if not ok:
            log.warning("instance %s/%s is no longer ours", rec.service, rec.number)
        return ok

    async def must_write(self, rec: InstanceRecord) -> None:
        """Overwrite our record; a lost compare means our view of the key is stale, so the key
        cools down (the watch brings the truth) instead of being re-planned hot."""
        if not await self.write(rec):
            raise StoreError(f"{rec.service}/{rec.number} changed in etcd since it was read", transient=True)
