"""The operator's actions an agent's API offers (scale, rollback, restart one instance, drain and
undrain a node), behind the :class:`Actions` port that :mod:`.action_routes` is given: the HTTP
side holds no store or runtime details.

* scale and rollback write a new version of the spec (:class:`~daprdockr.adapters.versions_store.VersionStore`,
  as ``svc set --instances`` and ``svc rollback`` do); drain and undrain write or delete the node's
  drain marker (:class:`~daprdockr.adapters.lifecycle_store.LifecycleStore`, as ``node drain`` does),
  checked against this agent's mirror of the cluster.
* a restart is done by the node that runs the instance: its container is stopped and started again
  in place (same container, a new start time) by the runtime, as the instance key's action in the
  reconciler (:meth:`~daprdockr.reconcile.Reconciler.exclusive`), so no pass plans anything for
  that key meanwhile (a container seen stopped mid-restart is not "exited").  Another node's
  instance is forwarded to its owner's API with this agent's token (once: a forwarded request
  that is not ours is a 409).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from daprdockr.adapters.lifecycle_store import LifecycleStore
from daprdockr.agent.peer_api import FORWARDED_HEADER, PeerApi, api_address
from daprdockr.agent.runtime import AgentRuntime
from daprdockr.core.containers import ContainerInfo
from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState
from daprdockr.errors import ConflictError, NotFoundError

log = logging.getLogger(__name__)
T = TypeVar("T")
Key = tuple[ServiceName, int]


@dataclass(frozen=True, slots=True)
class Reply:
    """What an action answers: a JSON object and its HTTP status (200, or a forwarded owner's)."""

    body: Mapping[str, Any] = field(default_factory=dict)
    status: int = 200


class Actions(Protocol):
    """The actions port.  Errors: ValidationError (bad input), NotFoundError, ConflictError,
    StoreUnavailableError (etcd unreachable), other DaprDockrErrors."""

    async def scale(self, service: ServiceName, *, instances: int) -> Reply: ...

    async def rollback(self, service: ServiceName, *, to: int | None) -> Reply: ...

    async def restart(self, service: ServiceName, number: int, *, forwarded: bool) -> Reply: ...

    async def drain(self, node_id: str, *, on: bool) -> Reply: ...


class Exclusive(Protocol):
    async def exclusive(self, key: Key, work: Callable[[], Awaitable[T]]) -> T: ...


class SpecActions:
    """Scale, rollback, drain and undrain: writes to etcd."""

    def __init__(self, *, store: LifecycleStore, state: Callable[[], ClusterState]) -> None:
        self.store = store
        self.state = state

    async def _newest_version(self, service: ServiceName) -> int:
        history = await self.store.history(service)
        return history[-1].version if history else 0

    async def scale(self, service: ServiceName, *, instances: int) -> Reply:
        spec = await self.store.scale(service, instances)
        log.info("operator action: scaled %s to %d instance(s)", service, instances)
        return Reply({"ok": True, "service": str(service), "instances": spec.instances,
                      "version": await self._newest_version(service)})

    async def rollback(self, service: ServiceName, *, to: int | None) -> Reply:
        spec, source = await self.store.rollback(service, to=to)
        log.info("operator action: rolled %s back to version %d", service, source)
        return Reply({"ok": True, "service": str(service), "to_version": source, "image": spec.image,
                      "instances": spec.instances, "version": await self._newest_version(service)})

    async def drain(self, node_id: str, *, on: bool) -> Reply:
        await self.store.drain_known(node_id, on=on, state=self.state())
        log.info("operator action: %s node %s", "drain" if on else "undrain", node_id)
        return Reply({"ok": True, "node": node_id, "state": "draining" if on else "ready"})


class InstanceRestarts:
    """Restart one instance: here when this node runs it, else forwarded to the node that does."""

    def __init__(self, *, node_id: str, runtime: AgentRuntime, reconciler: Exclusive,
                 state: Callable[[], ClusterState], peers: PeerApi, stop_timeout: float) -> None:
        self.node_id = node_id
        self.runtime = runtime
        self.reconciler = reconciler
        self.state = state
        self.peers = peers
        self.stop_timeout = stop_timeout

    async def restart(self, service: ServiceName, number: int, *, forwarded: bool) -> Reply:
        state = self.state()
        rec = state.instances.get((service, number))
        if rec is None:
            raise NotFoundError(f"instance {number} of {service} not found")
        if rec.node == self.node_id:
            return await self._here(service, number, state)
        owner = state.nodes.get(rec.node)
        if forwarded or owner is None or not owner.api:
            why = "a forwarded request is not forwarded again" if forwarded else "that node publishes no API"
            raise ConflictError(f"instance {number} of {service} runs on node {rec.node} ({why})")
        path = f"/v1/services/{service.group}/{service.service}/instances/{number}/restart"
        reply = await self.peers.post_json(api_address(owner), path, {}, headers={FORWARDED_HEADER: self.node_id})
        return Reply(reply.body, reply.status)

    async def _here(self, service: ServiceName, number: int, state: ClusterState) -> Reply:
        spec = state.services.get(service)
        if spec is None:
            raise ConflictError(f"{service} has no valid spec: its instances are left as they are")
        container = await self.runtime.find_instance(service=service, number=number)
        if container is None or not container.running or container.paused:
            what = "is paused" if container is not None and container.paused else "has no running container"
            raise ConflictError(f"instance {number} of {service} {what} on node {self.node_id}")
        grace = spec.stop_timeout if spec.stop_timeout is not None else self.stop_timeout

        async def restart() -> ContainerInfo:
            return await self.runtime.restart_container(container, spec=spec, grace=grace, signal=spec.stop_signal)

        info = await self.reconciler.exclusive((service, number), restart)
        log.info("operator action: restarted instance %d of %s (container %s)", number, service, info.id[:12])
        return Reply({"ok": True, "service": str(service), "instance": number, "node": self.node_id,
                      "container_id": info.id[:12]})


class AgentActions:
    """The :class:`Actions` of a running agent: :class:`SpecActions` and :class:`InstanceRestarts`."""

    def __init__(self, *, specs: SpecActions, restarts: InstanceRestarts) -> None:
        self.specs = specs
        self.restarts = restarts

    async def scale(self, service: ServiceName, *, instances: int) -> Reply:
        return await self.specs.scale(service, instances=instances)

    async def rollback(self, service: ServiceName, *, to: int | None) -> Reply:
        return await self.specs.rollback(service, to=to)

    async def restart(self, service: ServiceName, number: int, *, forwarded: bool) -> Reply:
        return await self.restarts.restart(service, number, forwarded=forwarded)

    async def drain(self, node_id: str, *, on: bool) -> Reply:
        return await self.specs.drain(node_id, on=on)
