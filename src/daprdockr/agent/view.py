"""The narrow, read-only view of a running agent that its HTTP API and metrics are given.

The API and the metrics writer never see the :class:`~daprdockr.agent.main.Agent` itself (no
import cycle, no reaching into its parts): they get an :class:`AgentView`, whose methods return
frozen snapshots (implemented by :class:`~daprdockr.agent.main.AgentStatus`), and a
:class:`LogSource` for container logs (implemented by the Docker runtime), and a
:class:`DashboardSource` for the dashboard (implemented by its feed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from daprdockr.core.containers import ContainerInfo
from daprdockr.core.etcd_health import EtcdHealth
from daprdockr.core.names import ServiceName
from daprdockr.core.prometheus import Histogram
from daprdockr.core.state import ClusterState


@dataclass(frozen=True, slots=True)
class LeaseView:
    lease: int
    healthy: bool  # a keepalive succeeded within the TTL


@dataclass(frozen=True, slots=True)
class ReconcileView:
    passes: int
    seconds: float
    latency: Histogram
    actions: Mapping[str, int]
    last_error: str
    unremovable: Sequence[Mapping[str, object]] = ()  # containers Docker could not remove yet (the reaper's)
    reaped: int = 0  # of those, removed since


@dataclass(frozen=True, slots=True)
class NginxView:
    healthy: bool
    last_error: str
    restarts: int
    table_updates: int  # routing table changes posted (no reloads)
    update_failures: int
    retries: int  # requests nginx tried on another instance
    ejections: int  # instances skipped for a while after a refused or timed out try
    applied_revision: int  # etcd revision of the newest state nginx's table holds
    routes: int  # hosts in the table
    handshakes: int = 0  # TLS handshakes that chose a certificate (by SNI or the default)
    certificates: int = 0  # certificates nginx holds (from etcd, confirmed)
    expiry: Sequence[tuple[str, str, float]] = ()  # (host, source, not_after) of the certificates in etcd
    ocsp_staples: int = 0  # hosts whose certificate has a current OCSP staple
    ocsp_failures: int = 0  # OCSP fetches that failed or gave an unusable answer


@dataclass(frozen=True, slots=True)
class AcmeView:
    orders: Mapping[str, int]  # orders this agent finished, by result (issued, failed)
    ordering: int  # hosts it orders right now
    last_error: str


@dataclass(frozen=True, slots=True)
class DnsView:
    address: str  # "ip:port"
    workers_alive: int
    workers: int
    queries: int
    cache_hits: int
    forwarded: int
    limited: int  # answers to clients outside the allowed networks dropped or truncated (rate limit)
    answers: Mapping[str, int] = field(default_factory=dict)  # by rcode


class AgentView(Protocol):
    @property
    def node_id(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def started_at(self) -> float: ...

    @property
    def runtime(self) -> str: ...  # "docker", or "hollow" (containers in memory: a test node)

    def state(self) -> ClusterState: ...

    def lease(self) -> LeaseView: ...

    def tasks(self) -> Mapping[str, str]: ...

    def task_restarts(self) -> Mapping[str, int]: ...

    def reconcile(self) -> ReconcileView: ...

    def etcd_errors(self) -> int: ...

    def nginx(self) -> NginxView | None: ...

    def dns(self) -> DnsView | None: ...

    def acme(self) -> AcmeView | None: ...  # None: no --acme-directory

    def applied_revision(self) -> int: ...

    def etcd_health(self) -> EtcdHealth: ...  # database size, quota, alarms, compactions

    async def docker_ping(self) -> None: ...

    async def containers(self) -> Sequence[ContainerInfo]: ...  # this node's, as its runtime lists them now


class LogSource(Protocol):
    async def find_instance(self, *, service: ServiceName, number: int) -> ContainerInfo | None: ...

    def logs(self, container_id: str, *, tail: int = 100, follow: bool = False) -> AsyncIterator[str]: ...


class DashboardStream(Protocol):
    """One client's dashboard stream (:class:`~daprdockr.agent.dashboard_feed.Subscriber`)."""

    async def next(self, *, idle: float) -> list[bytes] | None: ...  # [] after idle seconds; None: ended


class DashboardSource(Protocol):
    """The dashboard's model and its stream (:class:`~daprdockr.agent.dashboard_feed.DashboardFeed`)."""

    def snapshot(self) -> bytes: ...  # the model as JSON

    def subscribe(self, *, last_event_id: str = "") -> DashboardStream: ...  # starts with a snapshot or a replay

    def unsubscribe(self, sub: DashboardStream) -> None: ...

    def close_streams(self) -> None: ...
