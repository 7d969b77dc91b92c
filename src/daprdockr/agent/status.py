"""The read-only view of a running :class:`~daprdockr.agent.main.Agent` given to its API and metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from daprdockr.agent.view import AcmeView, AgentView, DnsView, LeaseView, NginxView, ReconcileView
from daprdockr.core.containers import ContainerInfo
from daprdockr.core.etcd_health import EtcdHealth
from daprdockr.core.state import ClusterState

if TYPE_CHECKING:
    from daprdockr.agent.main import Agent


class AgentStatus(AgentView):
    """The read-only view of an :class:`Agent` given to its API and metrics."""

    def __init__(self, agent: Agent) -> None:
        self._a = agent
        self._started_at = agent.heartbeat.node.started_at

    @property
    def node_id(self) -> str:
        return self._a.config.node_id

    @property
    def address(self) -> str:
        return self._a.config.advertise_ip

    @property
    def started_at(self) -> float:
        return self._started_at

    @property
    def runtime(self) -> str:
        return self._a.config.runtime

    def state(self) -> ClusterState:
        return self._a.mirror.state()

    def lease(self) -> LeaseView:
        return LeaseView(lease=self._a.heartbeat.lease, healthy=self._a.heartbeat.healthy)

    def tasks(self) -> Mapping[str, str]:
        return dict(self._a.tasks.state)

    def task_restarts(self) -> Mapping[str, int]:
        return dict(self._a.tasks.restarts)

    def reconcile(self) -> ReconcileView:
        r = self._a.reconciler
        return ReconcileView(passes=r.reconciles, seconds=r.reconcile_seconds, latency=r.latency,
                             actions=dict(r.actions_total), last_error=r.last_error,
                             unremovable=r.reaper.pending(), reaped=r.reaper.removed)

    def etcd_errors(self) -> int:
        return self._a.store.errors

    def nginx(self) -> NginxView | None:
        n = self._a.nginx
        if n is None:
            return None
        return NginxView(healthy=n.healthy, last_error=n.last_error, restarts=n.stats.restarts,
                         table_updates=n.stats.table_updates, update_failures=n.stats.update_failures,
                         retries=n.stats.retries, ejections=n.stats.ejections,
                         applied_revision=n.applied_revision, routes=len(n.table), handshakes=n.stats.handshakes,
                         certificates=n.tls.served, expiry=self._expiry(),
                         ocsp_staples=self._a.ocsp.staples if self._a.ocsp else 0,
                         ocsp_failures=self._a.ocsp.failures if self._a.ocsp else 0)

    def _expiry(self) -> list[tuple[str, str, float]]:
        tls = self._a.tls
        if tls is None:
            return []
        return [(host, rec.source, rec.info.not_after) for host, rec in sorted(tls.state.certs.items())]

    def applied_revision(self) -> int:
        return self._a.acks.applied_revision()

    def dns(self) -> DnsView | None:
        return self._a.dns.view() if self._a.dns is not None else None

    def acme(self) -> AcmeView | None:
        m = self._a.acme
        if m is None:
            return None
        return AcmeView(orders=dict(m.orders_total), ordering=len(m.ordering), last_error=m.last_error)

    def etcd_health(self) -> EtcdHealth:
        return self._a.housekeeper.health

    async def docker_ping(self) -> None:
        await self._a.runtime.ping()

    async def containers(self) -> list[ContainerInfo]:
        return await self._a.runtime.list_managed()
