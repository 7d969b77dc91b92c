"""The agent process: wiring and lifecycle.

One asyncio event loop runs these named, guarded root tasks (:mod:`.supervisor`):

* ``heartbeat``      lease keepalive and the ``nodes/<id>`` record (:mod:`.heartbeat`)
* ``etcd-watch``     the informer: list, watch, resync into the mirror
                     (:mod:`daprdockr.adapters.informer`); every change is published (:mod:`.changes`)
* ``docker-events``  marks the reconciler's container listing stale on any event of this node
* ``reconcile``      the level-triggered reconcile loop (:mod:`daprdockr.reconcile`)
* ``fanout``         pushes the routing state to the serving components when it changed (:mod:`.fanout`)
* ``settle``         enables claims once the node had time to see its peers
* ``applied``        publishes the revision of the removals this node's nginx and DNS serve
                     (:mod:`.routing_ack`, which they acknowledge to)
* ``health``         runs the services' health checks on this node's containers (:mod:`daprdockr.health`)
* ``etcd-housekeeping`` compacts etcd (the lock holder) and polls its size and alarms
                     (:mod:`.etcd_housekeeping`)
* ``acme``           with ``--acme-directory``: orders and renews the HTTPS hosts' certificates,
                     one agent per host at a time (:mod:`.acme_manager`)
* one per component: ``nginx`` (:mod:`daprdockr.proxy`), ``dns`` (the responder and its
  worker processes), ``dashboard`` (the dashboard's model and stream, :mod:`.dashboard_feed`) and
  ``api`` (:mod:`.api`), and under systemd ``watchdog`` (:mod:`.watchdog`)

Under systemd (``NOTIFY_SOCKET``, :mod:`daprdockr.adapters.sdnotify`) the agent says what it does
(``STATUS=joining: ...``), ``READY=1`` once :meth:`Agent.start` returned (registered in etcd, DNS
and nginx serving), and ``STOPPING=1`` when the stop event is set.

Components are typed (:mod:`.components`: start / run / stop), started in the order of
:attr:`Agent.components` and stopped in reverse.  They are wired without callbacks into parts
not yet built: what changed goes through one channel (:mod:`.changes`) that the reconciler and
the fanout subscribe to.  The API and the metrics get a read-only
:class:`~daprdockr.agent.view.AgentView` (:class:`~daprdockr.agent.status.AgentStatus`), never the
agent.  The reconciler hands the events of its confirmed writes to the informer (read-your-writes) itself,
after each store call returned.

Signals only set the stop event (:mod:`daprdockr.adapters.process`).  Shutdown is ordered and
time-limited: stop the tasks that act (:data:`ACTING_TASKS`: heartbeat, reconcile, health ...),
then (``release_on_exit``) revoke the lease, wait until every other agent and this node's own
nginx and DNS applied that (the watch, fanout and serving tasks still run), drain and stop this
node's containers, or leave them running for a restart to adopt (also when etcd cannot confirm
the revoke); then the other root tasks (a task that does not end within :data:`ROOTS_STOP_TIMEOUT`
of its cancel is logged with its stack and left behind); then the components in reverse start
order (API, DNS, nginx last).  A second signal kills nginx's process group and exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from daprdockr.adapters.etcd_maintenance import EtcdMaintenance
from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.informer import Informer
from daprdockr.adapters.lease_keeper import LeaseKeeper
from daprdockr.adapters.lifecycle_store import LifecycleStore
from daprdockr.adapters.process import run_until_signal
from daprdockr.adapters.sdnotify import Notifier
from daprdockr.adapters.statedir import api_token, prepare_state_dir
from daprdockr.adapters.tls_store import TlsStore
from daprdockr.agent.acme_manager import AcmeManager
from daprdockr.agent.api import AgentApi
from daprdockr.agent.changes import Changes, Topic
from daprdockr.agent.components import Component, Dns, Serving
from daprdockr.agent.config import AgentConfig
from daprdockr.agent.dashboard_feed import DashboardFeed
from daprdockr.agent.etcd_housekeeping import EtcdHousekeeper
from daprdockr.agent.fanout import RoutingFanout
from daprdockr.agent.heartbeat import Heartbeat
from daprdockr.agent.https_setup import https_listen_auto, tls_parts
from daprdockr.agent.ocsp_stapler import OcspStapler
from daprdockr.agent.operator_routes import operator_routes
from daprdockr.agent.routing_ack import RoutingAck
from daprdockr.agent.runtime import AgentRuntime, make_runtime
from daprdockr.agent.status import AgentStatus
from daprdockr.agent.supervisor import TaskStatus, guarded
from daprdockr.agent.tls_watch import TlsWatch
from daprdockr.agent.watchdog import Watchdog
from daprdockr.cancellation import stop_tasks, within
from daprdockr.core.backoff import Backoff
from daprdockr.core.containers import ContainerInfo
from daprdockr.core.keys import KeySchema
from daprdockr.core.records import NodeRecord
from daprdockr.core.state import ClusterState
from daprdockr.errors import DaprDockrError, StoreAccessError, StoreRefusedError
from daprdockr.health import HealthMonitor
from daprdockr.proxy import NginxManager, lua_modules
from daprdockr.reconcile import Reconciler

log = logging.getLogger(__name__)


# Root tasks that act on the cluster: on shutdown they stop first; the others (the etcd watch,
# fanout, ``applied`` and the serving components) keep running while this node's instances are
# released, so the removal is confirmed and this node's own nginx and DNS drop them first.
ACTING_TASKS = frozenset({"heartbeat", "reconcile", "settle", "health", "docker-events", "etcd-housekeeping",
                          "acme"})
ROOTS_STOP_TIMEOUT = 5.0  # the rest of the root tasks, once the instances are released


def _fmt(addr: tuple[str, int] | None) -> str:
    return f"{addr[0]}:{addr[1]}" if addr else ""


async def _retry(what: str, fn: Callable[[], Awaitable[object]], *, stop: asyncio.Event, notifier: Notifier) -> bool:
    """Retry a start-up step until it works or ``stop`` is set (etcd/Docker may come later).
    etcd refusing our certificate, password or role is raised at once: the agent exits with
    that one line instead of retrying what cannot work (any other error is retried)."""
    policy = Backoff(base=0.5, max_delay=5.0)
    failures = 0
    while not stop.is_set():
        try:
            await fn()
            return True
        except DaprDockrError as exc:
            if isinstance(exc, StoreRefusedError | StoreAccessError):
                raise DaprDockrError(f"{what} failed: {exc}") from exc
            failures += 1
            log.error("%s failed (%s); retrying", what, exc)
            delay = policy.delay(failures)
            # under systemd: still starting, not hung (a host that boots before etcd is not
            # killed at TimeoutStartSec and restarted in a loop)
            notifier.notify(f"STATUS=joining: {what} failed, retrying",
                            f"EXTEND_TIMEOUT_USEC={int((delay + 30) * 1e6)}")
            with contextlib.suppress(TimeoutError):
                await within(stop.wait(), delay)
    return False


class Agent:
    """One node.  ``await agent.run(stop_event)`` starts it, runs it until ``stop`` is set, stops it."""

    def __init__(self, config: AgentConfig, *, notifier: Notifier | None = None) -> None:
        self.config = config
        self.https_listen = config.https_listen  # (--https-listen auto decides it at start)
        self.notifier = notifier or Notifier(None)  # systemd's notify socket (none: nothing is sent)
        self.schema = KeySchema(config.prefix)
        self.changes = Changes()  # what changed, published by the parts; the reconciler and the fanout subscribe
        self.store = EtcdStore(endpoints=config.etcd, schema=self.schema, timeout=3.0,
                               security=config.etcd_security)
        chosen = make_runtime(config)  # Docker, or a hollow node's containers in memory (--runtime)
        self.runtime: AgentRuntime = chosen.runtime
        self.informer = Informer(store=self.store, on_change=self.changes.etcd_changed)
        self.mirror = self.informer.mirror
        self.lifecycle = LifecycleStore(self.store)
        # the lease's keepalives from a thread of their own (a busy loop must not make them late)
        self.keeper = LeaseKeeper(connect=lambda: EtcdStore(endpoints=config.etcd, schema=self.schema, timeout=3.0,
                                                            security=config.etcd_security), ttl=config.ttl)
        self.heartbeat = Heartbeat(
            keeper=self.keeper,
            store=self.store,
            node=NodeRecord(node_id=config.node_id, address=config.advertise_ip, capacity=config.capacity,
                            started_at=time.time(), dns=_fmt(config.dns_listen), http=_fmt(config.http_listen),
                            api=_fmt(config.api_listen), runtime=config.runtime,
                            compacts=config.compact_interval > 0),
            ttl=config.ttl,
            on_new_lease=self._on_new_lease,
        )
        self.acks = RoutingAck(node_id=config.node_id, store=self.store, lease=self.heartbeat, cluster=self.informer,
                               confirm_timeout=config.confirm_timeout)
        self.reconciler = Reconciler(
            node_id=config.node_id, address=config.advertise_ip, store=self.store, runtime=self.runtime,
            mirror=self.mirror, capacity=config.capacity, stop_timeout=config.stop_timeout,
            on_local_change=self.changes.local_changed, on_written=self.informer.apply,
            confirm_removal=self.acks.confirm_removal, drain_timeout=config.drain_timeout,
            rollouts=self.lifecycle,
        )
        self.reconciler.rebalance = config.rebalance
        self.changes.subscribe(self.reconciler.dirty, Topic.ETCD, Topic.HEALTH)
        listing = self.reconciler.listing
        self.health = HealthMonitor(runtime=self.runtime, address=config.advertise_ip,
                                    containers=lambda: listing.containers,
                                    specs=lambda: self.mirror.state().services,
                                    history=lambda: self.mirror.state().history,
                                    on_change=self.changes.health_changed, network=chosen.network_check)
        self.reconciler.health = self.health
        self.fanout = RoutingFanout(mirror=self.mirror, changes=self.changes, node_id=config.node_id,
                                    local=self.reconciler, acks=self.acks)
        self.housekeeper = EtcdHousekeeper(maintenance=EtcdMaintenance(self.store), node_id=config.node_id,
                                           lease=lambda: self.heartbeat.lease, nodes=lambda: self.mirror.state().nodes,
                                           interval=config.compact_interval,
                                           quota=config.etcd_quota_bytes)
        # the dashboard's model and stream (a component only when the API serves it)
        self.dashboard = DashboardFeed(state=self.mirror.state, changes=self.changes, node_id=config.node_id)
        self.acme: AcmeManager | None = None
        if config.acme is not None:
            self.acme = AcmeManager(tls=TlsStore(store=self.store), node_id=config.node_id,
                                    lease=lambda: self.heartbeat.lease,
                                    services=lambda: self.mirror.state().services.values(), settings=config.acme)
            self.changes.subscribe(self.acme.wakeup, Topic.ETCD)  # (a pass at once when the HTTPS hosts change)
        self.tasks = TaskStatus()
        self.nginx: NginxManager | None = None
        self.tls: TlsWatch | None = None  # certificates and ACME answers from etcd to nginx
        self.ocsp: OcspStapler | None = None  # OCSP staples for the served certificates (with HTTPS)
        self.dns: Dns | None = None
        self.api: AgentApi | None = None
        self.components: list[Component] = []  # in start order; stopped in reverse
        self.started: list[Component] = []

    # ------------------------------------------------------------------ wiring
    def _build_components(self) -> None:
        cfg = self.config
        self.components.append(self.housekeeper)
        if cfg.http_listen is not None:
            self.nginx = NginxManager(state_dir=cfg.state_dir / cfg.node_id / "nginx", listen=cfg.http_listen,
                                      binary=cfg.nginx_binary, acks=self.acks,
                                      module_dirs=cfg.nginx_modules, orphan_timeout=cfg.nginx_orphan_timeout,
                                      https_listen=self.https_listen, node=cfg.node_id)
            self.nginx.leave_running = not cfg.release_on_exit  # (--keep-on-exit: a restart adopts it)
            self.components.append(self.nginx)
            self.tls, self.ocsp = tls_parts(cfg, store=self.store, nginx=self.nginx, https_listen=self.https_listen)
            self.components.append(self.tls)
            if self.ocsp is not None:
                self.components.append(self.ocsp)
        if cfg.dns_listen is not None:
            self.dns = Dns(listen=cfg.dns_listen, upstreams=cfg.dns_upstreams, ttl=cfg.dns_ttl,
                           workers=cfg.dns_workers, allow=cfg.dns_allow,
                           container_networks=self.runtime.container_networks, state=self.fanout.state,
                           also=cfg.dns_also, acks=self.acks)
            self.components.append(self.dns)
        if cfg.api_listen is not None:
            token = api_token(cfg.state_dir, cfg.api_token_file)
            self.components.append(self.dashboard)
            self.api = AgentApi(view=AgentStatus(self), logs=self.runtime, listen=cfg.api_listen,
                                max_log_streams=cfg.max_log_streams, token=token,
                                routes=operator_routes(self, token=token), dashboard=self.dashboard)
            self.components.append(self.api)
        if self.acme is not None:
            self.components.append(self.acme)
        if self.notifier.enabled:
            self.components.append(Watchdog(notifier=self.notifier, status=self.status_line))
        self.fanout.receivers.extend(self.serving)

    def status_line(self) -> str:
        return f"serving {self.mirror.state().held_by(self.config.node_id)} instances"

    @property
    def serving(self) -> list[Serving]:
        return [c for c in (self.nginx, self.dns) if c is not None]

    def _on_new_lease(self, lease: int) -> None:
        self.reconciler.lease = lease
        self.reconciler.mark_dirty()
        self.acks.new_lease()  # ``applied/<node>`` went with the old lease: write it again on this one

    # ------------------------------------------------------------------ lifecycle
    async def start(self, stop: asyncio.Event) -> bool:
        """Connect to Docker and etcd, load state, register the node, start the components."""
        cfg = self.config
        prepare_state_dir(cfg.state_dir)
        if cfg.http_listen is not None:
            lua_modules(cfg.nginx_modules)  # one clear line naming the package, before joining the cluster
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("connecting to Docker", self.runtime.ping), ("reading etcd", self.informer.list_once),
            ("registering the node", self.heartbeat.register),
            ("ending a drain on shutdown", self._end_shutdown_drain),
        ]
        self.keeper.start()  # (it renews the lease once the heartbeat registers one)
        for what, step in steps:
            self.notifier.notify(f"STATUS=joining: {what}")
            if not await _retry(what, step, stop=stop, notifier=self.notifier):
                return False
        if cfg.https_auto:
            self.https_listen = await https_listen_auto(store=self.store, advertise_ip=cfg.advertise_ip)
        self.notifier.notify("STATUS=joining: starting DNS, nginx and the API")
        self._build_components()
        for component in self.components:
            await component.start()
            self.started.append(component)
        if self.nginx is not None:
            self.nginx.update(self.fanout.state())
        log.info("agent %s up: address %s, etcd %s, dns %s, http %s, https %s", cfg.node_id, cfg.advertise_ip,
                 ",".join(map(str, cfg.etcd)), _fmt(cfg.dns_listen) or "off", _fmt(cfg.http_listen) or "off",
                 _fmt(self.https_listen) or "off")
        return True

    async def _docker_events(self) -> None:
        async for _event in self.runtime.events():
            self.reconciler.mark_containers_dirty()
        raise DaprDockrError("docker event stream ended", transient=True)

    async def _settle(self) -> None:
        """Enable claims once peers had a chance to register (spread, not first-come-takes-all)."""
        await asyncio.sleep(min(1.0, self.config.ttl / 5))
        while True:
            self.reconciler.claiming = self.heartbeat.healthy
            await asyncio.sleep(0.2)

    def roots(self) -> dict[str, Callable[[], Awaitable[None]]]:
        roots: dict[str, Callable[[], Awaitable[None]]] = {
            "heartbeat": self.heartbeat.run,
            "etcd-watch": self.informer.run,
            "docker-events": self._docker_events,
            "reconcile": self.reconciler.run,
            "fanout": self.fanout.run,
            "settle": self._settle,
            "applied": self.acks.run,
            "health": self.health.run,
            "reaper": self.reconciler.reaper.run,
        }
        roots.update({c.name: c.run for c in self.started})
        return roots

    async def run(self, stop: asyncio.Event) -> int:
        """Start, run every task until ``stop`` is set, then shut down in order."""
        try:
            if not await self.start(stop):
                self.notifier.notify("STOPPING=1", "STATUS=stopped before it joined")
                await self._stop_components()
                await self._close()
                return 0
        except DaprDockrError as exc:
            log.error("agent start failed: %s", exc)
            self.notifier.notify("STOPPING=1", f"STATUS=start failed: {exc}")
            await self._stop_components()
            await self._close()
            return 1
        self.notifier.notify("READY=1", f"STATUS={self.status_line()}")
        running = {n: asyncio.create_task(guarded(n, f, status=self.tasks), name=n) for n, f in self.roots().items()}
        released = False
        try:
            await stop.wait()
            self.notifier.notify("STOPPING=1", "STATUS=draining" if self.config.drain_on_shutdown
                                 else "STATUS=shutting down: releasing instances")
            if self.config.drain_on_shutdown:
                await self.drain_before_exit()
            log.info("shutting down")
            await stop_tasks([t for n, t in running.items() if n in ACTING_TASKS], grace=self.config.shutdown_timeout)
            released = True
            await self.release_instances()  # the watch, fanout, applied and serving tasks still run
        finally:
            if not released:
                await self.release_instances()
            await stop_tasks(running.values(), grace=ROOTS_STOP_TIMEOUT)
            await self.shutdown()
        return 0

    async def release_instances(self) -> None:
        """Time-limited: end the running actions, then release this node's instances (or leave
        them for the next start to adopt, without ``release_on_exit``)."""
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.shutdown_timeout):
                await self.reconciler.cancel_all()
                if cfg.release_on_exit:
                    await self._release_all()
                else:
                    log.info("leaving containers running for the next start to adopt")
        except (TimeoutError, DaprDockrError) as exc:
            log.error("releasing instances did not finish: %r", exc)

    async def shutdown(self) -> None:
        """Ordered, time-limited: the components in reverse start order, then the clients."""
        await self._stop_components()
        try:
            async with asyncio.timeout(5):
                await self._close()
        except Exception:
            log.exception("closing the etcd and Docker clients failed")

    async def _end_shutdown_drain(self) -> None:
        """A drain marker our last --drain-on-shutdown left is lifted: the node is back."""
        if await self.lifecycle.end_shutdown_drain(self.config.node_id):
            log.info("lifted the drain this node set when it last shut down")

    async def drain_before_exit(self) -> None:
        """--drain-on-shutdown: mark the node draining, then wait (bounded) until the other nodes
        took over every instance and ours stopped; the root tasks keep running meanwhile."""
        cfg = self.config
        try:
            await self.lifecycle.drain(cfg.node_id, on=True, shutdown=True)
        except DaprDockrError as exc:
            log.error("could not mark the node draining (%s); shutting down without a drain", exc)
            return
        log.info("draining before shutdown (at most %.0fs)", cfg.drain_deadline)

        def drained(state: ClusterState) -> bool:
            return not state.held_by(cfg.node_id) and not any(c.running for c in self.reconciler.containers)

        if await self.informer.wait_for(drained, within=cfg.drain_deadline, poll=0.5):
            log.info("drained: every instance runs elsewhere")
        else:
            log.warning("drain incomplete after %.0fs (%d instance(s) still here); shutting down",
                        cfg.drain_deadline, self.mirror.state().held_by(cfg.node_id))

    async def _stop_components(self) -> None:
        while self.started:
            component = self.started.pop()
            try:
                async with asyncio.timeout(5):
                    await component.stop()
            except Exception:
                log.exception("stopping %s failed", component.name)

    async def _release_all(self) -> None:
        """Release before stop: revoke the lease (every key of ours goes at once), wait until the
        other agents and this node's own nginx and DNS applied that (bounded), let connections
        drain, then stop.  If etcd cannot confirm the revoke, every other router may still send
        requests here: the containers keep running (the next start adopts them; if this node
        does not come back, the other nodes re-run its instances once the lease expired)."""
        containers = await self.runtime.list_managed()
        # the revoke takes out of the routes only what this node's records route now: with none
        # (deleted or scaled away before), no agent publishes anything for it, and no wait is owed
        routed = any(r.routable for r in self.mirror.state().index.of_node(self.config.node_id).values())
        try:
            revoked = await self.heartbeat.release()
        except DaprDockrError as exc:
            log.error("could not revoke the lease (%s): leaving %d container(s) running (the next start adopts "
                      "them; other nodes re-run the instances once the lease expired)", exc, len(containers))
            return
        if revoked and routed:
            await self.acks.confirm_removal(revoked)

        async def stop(c: ContainerInfo) -> None:
            if c.serving:  # (a paused container cannot finish anything)
                await self.runtime.drain(c, within=self.config.drain_timeout)
            await self.reconciler.stop_container(c, grace=self.config.stop_timeout)

        await asyncio.gather(*(stop(c) for c in containers), return_exceptions=True)
        log.info("released the lease and stopped %d containers", len(containers))

    async def _close(self) -> None:
        await asyncio.to_thread(self.keeper.stop)
        await self.runtime.close()
        await self.store.close()

    def kill_nginx(self) -> None:
        """Last resort on a second signal: nginx must not outlive the agent."""
        if self.nginx is not None:
            self.nginx.kill()


def run_agent(config: AgentConfig) -> int:
    """Run the agent until SIGTERM/SIGINT; returns the process exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    agent = Agent(config, notifier=Notifier.from_env())
    try:
        return run_until_signal(agent.run, on_second_signal=agent.kill_nginx)
    finally:
        agent.notifier.close()
