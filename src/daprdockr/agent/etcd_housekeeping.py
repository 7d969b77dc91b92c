"""The etcd housekeeper: compacts etcd's history (one agent at a time) and watches its space.

* :meth:`EtcdHousekeeper.poll_once` (every ``poll_interval``, 10 s) reads the member's database
  size and every member's alarms into :attr:`EtcdHousekeeper.health`, shown by ``/healthz``, the
  metrics and the logs (a new or cleared alarm is logged once).
* :meth:`EtcdHousekeeper.compact_once` (every ``interval``, 5 min; never with ``0``): only the
  live node that joined first compacts (:func:`~daprdockr.core.etcd_health.compactor_of`, the same
  answer on every agent from the node records, no lock key), to the revision it saw one interval
  earlier (:func:`~daprdockr.core.etcd_health.compaction_step`).  When that node dies its record
  goes with its lease, and the next one's tick takes over (then waits one interval before it
  compacts: the revisions it has not seen for that long are not its to drop).

Failures (etcd unreachable, a user whose role may not compact) are logged and shown, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Protocol

from daprdockr.adapters.etcd_maintenance import MemberStatus
from daprdockr.core.etcd_health import POLL_INTERVAL, EtcdHealth, Mark, alarm_names, compaction_step, compactor_of
from daprdockr.core.records import NodeRecord
from daprdockr.errors import DaprDockrError

log = logging.getLogger(__name__)


class Maintenance(Protocol):
    """What the housekeeper asks etcd (:class:`~daprdockr.adapters.etcd_maintenance.EtcdMaintenance`)."""

    async def status(self) -> MemberStatus: ...

    async def alarms(self) -> list[tuple[int, str]]: ...

    async def compact(self, revision: int) -> bool: ...


class EtcdHousekeeper:
    name = "etcd-housekeeping"

    def __init__(
        self, *, maintenance: Maintenance, node_id: str, lease: Callable[[], int],
        nodes: Callable[[], Mapping[str, NodeRecord]], interval: float, quota: int,
        poll_interval: float = POLL_INTERVAL, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.maintenance = maintenance
        self.node_id = node_id
        self.lease = lease
        self.nodes = nodes  # the live nodes' records (the agent's mirror)
        self.poll_interval = poll_interval
        self.clock = clock
        self.health = EtcdHealth(quota=quota, interval=interval)
        self._mark: Mark | None = None  # the revision seen one tick ago, while this node compacts

    @property
    def interval(self) -> float:
        return self.health.interval

    async def start(self) -> None:
        """Nothing to prepare (the first poll is the root task's)."""

    async def stop(self) -> None:
        """Nothing to release: the next node takes over once this one's record is gone."""

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
        """One tick: if this node is the one that compacts, compact to the revision of one tick
        ago.  Returns the revision compacted to, 0 when nothing was compacted."""
        if not self.lease():
            self._mark = None  # (no lease, no node record: a new one starts a new window)
            return 0
        compactor = compactor_of(self.nodes())
        try:
            if compactor != self.node_id:
                if self._mark is not None:
                    log.info("etcd compaction: %s compacts now", compactor or "another agent")
                self._mark = None
                self.health = replace(self.health, compactor=compactor, compact_error="")
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
