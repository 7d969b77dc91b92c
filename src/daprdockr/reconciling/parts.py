"""What the reconciler's parts need of each other: small Protocols, so each part depends on an
interface, not on another part's class (the :class:`~daprdockr.reconcile.Reconciler` wires them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Protocol

from daprdockr.core.containers import ContainerInfo
from daprdockr.core.mirror import WatchEvent
from daprdockr.core.model import ServiceSpec
from daprdockr.core.records import InstanceRecord


class Records(Protocol):
    """Our instance records (:class:`~daprdockr.reconciling.records.RecordWriter`)."""

    def fresh_record(self, c: ContainerInfo) -> InstanceRecord: ...

    def running_record(self, rec: InstanceRecord, c: ContainerInfo, *, spec: ServiceSpec | None,
                       healthy: bool = False) -> InstanceRecord: ...

    def confirmed(self, written: WatchEvent | None) -> bool: ...

    async def write(self, rec: InstanceRecord) -> bool: ...

    async def must_write(self, rec: InstanceRecord) -> None: ...


class Removal(Protocol):
    """Taking containers out of service (:class:`~daprdockr.reconciling.removal.ContainerRemoval`)."""

    async def left_routing_at(self, c: ContainerInfo, *, until: int) -> int: ...

    async def retire(self, rec: InstanceRecord, old: ContainerInfo, *, reason: str,
                     spec: ServiceSpec | None) -> InstanceRecord | None: ...

    async def take_out(self, c: ContainerInfo, *, removed_at: int, routed: bool, spec: ServiceSpec | None,
                       confirmed: Callable[[], Awaitable[None]] | None = None) -> None: ...

    async def stop_container(self, c: ContainerInfo, *, grace: float, spec: ServiceSpec | None) -> None: ...


class Started(Protocol):
    """Containers we started (:meth:`~daprdockr.reconciling.listing.ContainerListing.observe_started`)."""

    def observe_started(self, info: ContainerInfo) -> None: ...


class Stopping(Protocol):
    """The routable set (:meth:`~daprdockr.reconciling.listing.ContainerListing.stopping`)."""

    def stopping(self, c: ContainerInfo) -> AbstractContextManager[None]: ...


class Reaping(Protocol):
    """The background removal (:class:`~daprdockr.adapters.container_reaper.ContainerReaper`)."""

    def add(self, container: ContainerInfo, *, error: str) -> None: ...
