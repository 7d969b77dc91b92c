"""Confirmed removal on this node: the ``applied`` task and the wait for every agent.

:class:`RoutingAck` is what this node's routers acknowledge to (nginx and the DNS worker
processes report the revision they serve; the fanout reports each state it hands out), kept in
the pure :class:`~daprdockr.core.removal_tracker.RemovalTracker`.  Its ``applied`` task writes
``applied/<node>`` (``{"revision": R}``, on the node's lease: a contract older agents read) when
a removal is served by all of them; :meth:`RoutingAck.confirm_removal` is how an owner waits
until every live agent published a removal's revision before it stops a container.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from daprdockr.core import removal
from daprdockr.core.removal_tracker import RemovalTracker
from daprdockr.core.state import ClusterState
from daprdockr.errors import DaprDockrError

log = logging.getLogger(__name__)


class AppliedStore(Protocol):
    async def put_applied(self, node_id: str, revision: int, *, lease: int) -> None: ...


class LeaseHolder(Protocol):
    @property
    def lease(self) -> int: ...


class StateWaiter(Protocol):
    @property
    def state(self) -> ClusterState: ...

    async def wait_for(self, ready: Callable[[ClusterState], bool], *, within: float, poll: float = 0.1) -> bool: ...


class RoutingAck:
    name = "applied"

    def __init__(self, *, node_id: str, store: AppliedStore, lease: LeaseHolder, cluster: StateWaiter,
                 confirm_timeout: float) -> None:
        self.node_id = node_id
        self.store = store
        self.holder = lease
        self.cluster = cluster
        self.confirm_timeout = confirm_timeout
        self.tracker = RemovalTracker()
        self._due = asyncio.Event()

    # ------------------------------------------------------------------ what the routers report
    def served(self, *, revision: int, routed_removed: bool, mirror_removal: int) -> None:
        """The fanout handed the routers the state at ``revision``."""
        if self.tracker.served(revision=revision, routed_removed=routed_removed, mirror_removal=mirror_removal):
            self._due.set()

    def acknowledge(self, router: str, revision: int | None) -> None:
        if self.tracker.acknowledge(router, revision):
            self._due.set()

    def new_lease(self) -> None:
        self.tracker.new_lease()
        self._due.set()

    def applied_revision(self) -> int:
        """The newest removal this node's DNS and nginx all serve."""
        return self.tracker.applied

    # ------------------------------------------------------------------ applied/<node>
    async def publish_once(self) -> bool:
        """Write ``applied/<node>`` if a removal was applied since the last write (no removal, no write)."""
        revision = self.tracker.due()
        lease = self.holder.lease
        if not revision or not lease:
            return False
        await self.store.put_applied(self.node_id, revision, lease=lease)
        self.tracker.wrote(revision)
        return True

    async def start(self) -> None:
        pass

    async def run(self) -> None:
        while True:
            await self._due.wait()
            self._due.clear()
            await asyncio.sleep(0.02)  # coalesce a burst of removals into one write
            try:
                published = await self.publish_once()
            except DaprDockrError as exc:
                # etcd unreachable, or our lease expired before the heartbeat saw it (it registers
                # again, and the new lease publishes anew): try again, never end the task
                log.info("publishing the applied revision failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                self._due.set()
                continue
            if not published and self.tracker.waiting:
                await asyncio.sleep(0.05)  # a router has not confirmed yet: look again soon
                self._due.set()

    async def stop(self) -> None:
        pass

    # ------------------------------------------------------------------ the owner's wait
    async def confirm_removal(self, revision: int) -> None:
        """Until every live agent has applied ``revision`` (bounded by ``confirm_timeout``; who
        lagged is logged), so a container is out of every router before it stops."""
        def lagging(state: ClusterState) -> list[str]:
            late = removal.lagging(revision=revision, applied=state.applied,
                                   nodes={n: r.create_revision for n, r in state.nodes.items()})
            if self.node_id not in state.nodes and self.applied_revision() < revision:
                late.append(self.node_id)  # our lease is gone (shutdown): our own routers still count
            return late

        if await self.cluster.wait_for(lambda s: not lagging(s), within=self.confirm_timeout):
            log.info("removal at revision %d: applied by every agent", revision)
        else:
            log.warning("removal at revision %d: %s had not applied it after %.1fs; going on", revision,
                        ", ".join(lagging(self.cluster.state)), self.confirm_timeout)
