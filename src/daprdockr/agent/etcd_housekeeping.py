"""The etcd housekeeper: compacts etcd's history (one agent at a time) and watches its space.

* :meth:`EtcdHousekeeper.poll_once` (every ``poll_interval``, 10 s) reads the member's database
  size and every member's alarms into :attr:`EtcdHousekeeper.health`, shown by ``/healthz``, the
  metrics and the logs (a new or cleared alarm is logged once).
* :meth:`EtcdHousekeeper.compact_once` (every ``interval``, 5 min; never with ``0``) takes the
  compaction lock ``housekeeping/compactor`` with one transaction on the agent's lease if nobody
  holds it; only the holder compacts, to the revision it saw one interval earlier
  (:func:`~daprdockr.core.etcd_health.compaction_step`).  When the holder dies its lease and the
  lock go together, and the next agent's tick takes it over (then waits one interval before it
  compacts: the revisions it has not seen for that long are not its to drop).

Failures (etcd unreachable, a user whose role may not compact) are logged and shown, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol

from daprdockr.adapters.etcd_maintenance import Holder, MemberStatus
from daprdockr.core.etcd_health import POLL_INTERVAL, EtcdHealth, Mark, alarm_names, compaction_step
from daprdockr.errors import DaprDockrError

log = logging.getLogger(__name__)


class Maintenance(Protocol):
    """What the housekeeper asks etcd (:class:`~daprdockr.adapters.etcd_maintenance.EtcdMaintenance`)."""

    async def status(self) -> MemberStatus: ...

    async def alarms(self) -> list[tuple[int, str]]: ...

    async def compact(self, revision: int) -> bool: ...

    async def hold(self, *, node: str, lease: int, since: float) -> Holder: ...


class EtcdHousekeeper:
    name = "etcd-housekeeping"

    def __init__(
        self, *, maintenance: Maintenance, node_id: str, lease: Callable[[], int], interval: float, quota: int,
        poll_interval: float = POLL_INTERVAL, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.maintenance = maintenance
        self.node_id = node_id
        self.lease = lease
        self.poll_interval = poll_interval
        self.clock = clock
        self.health = EtcdHealth(quota=quota, interval=interval)
        self._mark: Mark | None = None  # the revision seen one tick ago, while we hold the lock

    @property
    def interval(self) -> float:
        return self.health.interval

    async def start(self) -> None:
        """Nothing to prepare (the first poll is the root task's)."""

    async def stop(self) -> None:
        """Nothing to release: the lock goes with the agent's lease."""

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._every(self.poll_interval, self.poll_once), name="etcd-status")
            if self.interval > 0:
                tg.create_task(self._every(self.interval, self.compact_once), name="etcd-compaction")

    @staticmethod
    async def _every(seconds: float, step: Callable[[], Awaitable[object]]) -> None:
        while True:
            await step()
            await asyncio.sleep(seconds)

    async def poll_once(self) -> EtcdHealth:
        """Read the member's status and the cluster's alarms (a failure is kept in ``error``)."""
        before = self.health
        try:
            status = await self.maintenance.status()
            alarms = alarm_names(await self.maintenance.alarms())
        except DaprDockrError as exc:
            if not before.error:
                log.warning("reading etcd's status and alarms failed: %s", exc)
            self.health = replace(before, error=str(exc))
            return self.health
        self.health = replace(before, db_size=status.db_size, db_size_in_use=status.db_size_in_use, alarms=alarms,
                              revision=status.revision, polled=True, error="")
        if self.health.problem and alarms != before.alarms:
            log.error("%s", self.health.problem)
        elif before.alarms and not alarms:
            log.warning("etcd's alarm %s was disarmed: writes work again", ", ".join(before.alarms))
        return self.health

    async def compact_once(self) -> int:
        """One tick: hold the lock (or see who does), and as its holder compact to the revision of
        one tick ago.  Returns the revision compacted to, 0 when nothing was compacted."""
        lease = self.lease()
        if not lease:
            self._mark = None  # (no lease, no lock; a new one starts a new window)
            return 0
        try:
            holder = await self.maintenance.hold(node=self.node_id, lease=lease, since=time.time())
            if holder.lease != lease:
                if self._mark is not None:
                    log.info("etcd compaction: %s holds the lock now", holder.node or "another agent")
                self._mark = None
                self.health = replace(self.health, compactor=holder.node, compact_error="")
                return 0
            if self._mark is None:
                log.info("etcd compaction: this node compacts now (every %gs)", self.interval)
            status = await self.maintenance.status()
            target, self._mark = compaction_step(self._mark, revision=status.revision, now=self.clock(),
                                                 interval=self.interval)
            if target and await self.maintenance.compact(target):
                log.info("compacted etcd's history below revision %d", target)
                self.health = replace(self.health, compactions=self.health.compactions + 1,
                                      compacted_revision=target)
            self.health = replace(self.health, compactor=self.node_id, compact_error="")
            return target
        except DaprDockrError as exc:
            if self.health.compact_error != str(exc):
                log.warning("etcd compaction failed: %s", exc)
            self.health = replace(self.health, compact_error=str(exc))
            return 0
