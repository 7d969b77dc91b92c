"""What the reconciler uses of the outside world (Protocols), and the stand-ins of a node without it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from daprdockr.core.containers import ContainerInfo, LocalContainers
from daprdockr.core.health import PerContainerHealth
from daprdockr.core.mirror import WatchEvent
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import Health, InstanceRecord
from daprdockr.core.removal import KeyEvent
from daprdockr.core.rollout import Slot
from daprdockr.core.state import ClusterState


class InstanceStore(Protocol):
    """The part of :class:`~daprdockr.adapters.etcd_store.EtcdStore` the reconciler uses.

    Each write returns the event it produced (``None``: the compare failed, the key is not ours).
    """

    async def claim_instance(self, rec: InstanceRecord, *, lease: int) -> WatchEvent | None: ...

    async def update_instance(self, rec: InstanceRecord, *, lease: int) -> WatchEvent | None: ...

    async def release_instance(self, rec: InstanceRecord) -> WatchEvent | None: ...

    async def purge_instance(self, *, key: str, mod_revision: int) -> WatchEvent | None: ...

    async def instance_history(self, service: ServiceName, number: int, *, until: int) -> list[KeyEvent]: ...

    async def take_over_instance(self, rec: InstanceRecord, *, lease: int) -> WatchEvent | None: ...


class RolloutCoordinator(Protocol):
    """Replacement slots and rollout failure (:class:`~daprdockr.adapters.lifecycle_store.LifecycleStore`)."""

    async def take_slot(self, name: ServiceName, *, parallel: int, slot: Slot, lease: int) -> tuple[int, int]: ...

    async def mark_slot_failed(self, name: ServiceName, index: int, *, slot: Slot, lease: int) -> bool: ...

    async def release_slot(self, name: ServiceName, index: int, *, create_revision: int) -> bool: ...

    async def fail_rollout(self, name: ServiceName, *, target: str, reason: str, rollback: bool) -> str: ...


class Uncoordinated:
    """A single node without etcd coordination (unit tests): every replacement gets a slot."""

    async def take_slot(self, name: ServiceName, *, parallel: int, slot: Slot, lease: int) -> tuple[int, int]:
        return 1, 1

    async def mark_slot_failed(self, name: ServiceName, index: int, *, slot: Slot, lease: int) -> bool:
        return True

    async def release_slot(self, name: ServiceName, index: int, *, create_revision: int) -> bool:
        return True

    async def fail_rollout(self, name: ServiceName, *, target: str, reason: str, rollback: bool) -> str:
        return ""


class HealthSource(Protocol):
    """What the reconciler needs from the health checks (:mod:`daprdockr.health`)."""

    def health_of(self, container: ContainerInfo, spec: ServiceSpec) -> Health | None:
        """"" without a check, the container's status, or None while unknown (keep the record's)."""

    def observed(
        self, containers: LocalContainers, specs: Mapping[ServiceName, ServiceSpec],
    ) -> tuple[Mapping[str, Health], frozenset[str]]:
        """Each serving container's health for its record (unknown ones left out), and the
        containers due for an unhealthy restart (:class:`~daprdockr.core.health.PerContainerHealth`)."""

    async def probe(self, container: ContainerInfo, spec: ServiceSpec) -> bool: ...


class NoChecks(PerContainerHealth):
    """No health checks: every container is healthy ("") as long as it runs."""

    def __init__(self) -> None:
        self._seen: tuple[LocalContainers, Mapping[str, Health]] | None = None

    def health_of(self, container: ContainerInfo, spec: ServiceSpec) -> Health | None:
        return ""

    def restart_due(self, container: ContainerInfo, spec: ServiceSpec) -> bool:
        return False

    def observed(
        self, containers: LocalContainers, specs: Mapping[ServiceName, ServiceSpec],
    ) -> tuple[Mapping[str, Health], frozenset[str]]:
        if self._seen is None or self._seen[0] is not containers:  # ("" whatever the spec: once per listing)
            self._seen = (containers, {c.id: "" for c in containers if c.serving})
        return self._seen[1], frozenset()

    async def probe(self, container: ContainerInfo, spec: ServiceSpec) -> bool:
        return True


async def no_confirmation(revision: int) -> None:
    """Confirmed removal on a node alone: nobody else routes, nothing to wait for."""
    return None


def invalid_services(state: ClusterState) -> frozenset[ServiceName]:
    """Services with a malformed spec or instance key in etcd."""
    return frozenset(state.invalid_services) | frozenset(name for name, _ in state.invalid_instances)
