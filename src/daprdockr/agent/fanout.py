"""The ``fanout`` task: the routing state to this node's DNS and nginx, only when it changed.

The routing changes when a service or instance key does (the mirror's routing version) or,
in the agent, when this node's containers do (the change channel's ``LOCAL`` count); other etcd
writes (node records, ``applied`` keys) push nothing, and a burst of changes is one push.  The
agent serves its own instances as Docker shows them (:class:`~daprdockr.core.local_view.LocalView`
over the reconciler's routable containers); ``daprdockr dns`` serves etcd's view alone.  Each
state pushed is reported to confirmed removal (:class:`~daprdockr.agent.routing_ack.RoutingAck`)
when the agent has one.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from daprdockr.agent.changes import Changes, Topic
from daprdockr.agent.routing_ack import RoutingAck
from daprdockr.core.containers import LocalContainers
from daprdockr.core.local_view import LocalView
from daprdockr.core.mirror import StateMirror
from daprdockr.core.routing import routed_removed
from daprdockr.core.state import ClusterState


class Receiver(Protocol):
    def update(self, state: ClusterState) -> None: ...


class LocalContainersSource(Protocol):
    """This node's containers as Docker shows them (the reconciler's listing)."""

    @property
    def listed(self) -> bool: ...

    def routable(self) -> LocalContainers: ...


class RoutingFanout:
    name = "fanout"

    def __init__(self, *, mirror: StateMirror, changes: Changes, node_id: str = "",
                 local: LocalContainersSource | None = None, acks: RoutingAck | None = None) -> None:
        self.mirror = mirror
        self.changes = changes
        self.local = local
        self.acks = acks
        self.receivers: list[Receiver] = []  # the serving parts (the agent adds them once started)
        self.wake = asyncio.Event()
        changes.subscribe(self.wake, Topic.ETCD, Topic.LOCAL)
        self._local_view = LocalView(node_id=node_id)
        self._pushed: tuple[int, int] = (-1, -1)  # (routing version, local version) last pushed
        self._served = ClusterState()  # the last state pushed

    def state(self) -> ClusterState:
        """What this node's DNS and nginx serve: etcd's view, with our own instances as Docker shows them."""
        state = self.mirror.state()
        if self.local is None or not self.local.listed:
            return state
        return self._local_view.view(state, routable=self.local.routable())

    def fanout_once(self) -> bool:
        """Push the routing state to the receivers if services, instances or our containers changed."""
        version = (self.mirror.routing_version, self.changes.count(Topic.LOCAL))
        if version == self._pushed:
            return False
        self._pushed = version
        state = self.state()
        for receiver in self.receivers:
            receiver.update(state)
        if self.acks is not None:
            # an instance left DNS and nginx (etcd says so, even if it never reached ours, or we
            # know first): the owner waits for us to say we serve a state without it
            self.acks.served(revision=state.revision, routed_removed=routed_removed(self._served, state),
                             mirror_removal=self.mirror.removal_revision)
            self._served = state
        return True

    async def start(self) -> None:
        pass

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            self.fanout_once()

    async def stop(self) -> None:
        pass
