"""The agent process: wiring and lifecycle.

One asyncio event loop runs these named, guarded tasks in a TaskGroup:

* ``heartbeat``      lease keepalive and the ``nodes/<id>`` record (:mod:`.heartbeat`)
* ``etcd-watch``     applies etcd watch events to the :class:`StateMirror`, marks work dirty
* ``docker-events``  marks work dirty on any event of this node's containers
* ``reconcile``      the level-triggered reconcile loop (:mod:`.reconcile`)
* ``fanout``         pushes each new cluster state to the DNS server(s) and nginx
* ``dns-workers``    restarts DNS worker processes that exited (when ``dns_workers`` > 0)
* ``nginx``          supervises the nginx master (when ``http_listen`` is set)
* ``api``            the agent HTTP API (when ``api_listen`` is set)

Signals only set the stop event.  Shutdown is ordered and time-limited: stop reconciling and
watching, then (``release_on_exit``) stop this node's containers and revoke the lease, or leave
them running for a restart to adopt; then the DNS server and its workers; nginx last.  A second
signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from daprdockr.adapters.docker_runtime import DockerRuntime
from daprdockr.adapters.etcd_store import EtcdStore, WatchEvent
from daprdockr.adapters.statedir import api_token, prepare_state_dir
from daprdockr.agent.config import AgentConfig
from daprdockr.agent.heartbeat import Heartbeat
from daprdockr.agent.mirror import StateMirror
from daprdockr.agent.reconcile import Reconciler
from daprdockr.agent.supervisor import TaskStatus, guarded
from daprdockr.core.backoff import Backoff
from daprdockr.core.keys import KeySchema
from daprdockr.core.local_view import local_view
from daprdockr.core.model import NodeRecord
from daprdockr.core.state import ClusterState
from daprdockr.errors import DaprDockrError

log = logging.getLogger(__name__)


def _fmt(addr: tuple[str, int] | None) -> str:
    return f"{addr[0]}:{addr[1]}" if addr else ""


class Agent:
    """One node.  ``await agent.start()`` then ``await agent.run(stop_event)``."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.schema = KeySchema(config.prefix)
        self.store = EtcdStore(endpoints=config.etcd, schema=self.schema, timeout=3.0, security=config.etcd_security)
        self.runtime = DockerRuntime(
            node_id=config.node_id, advertise_ip=config.advertise_ip, url=config.docker
        )
        self.mirror = StateMirror(schema=self.schema)
        self.store.write_listeners.append(self._apply)
        self.reconciler = Reconciler(
            node_id=config.node_id,
            address=config.advertise_ip,
            store=self.store,
            runtime=self.runtime,
            mirror=self.mirror,
            capacity=config.capacity,
            stop_timeout=config.stop_timeout,
            on_local_change=self._local_change,
        )
        self.heartbeat = Heartbeat(
            store=self.store,
            node=NodeRecord(
                node_id=config.node_id,
                address=config.advertise_ip,
                capacity=config.capacity,
                started_at=time.time(),
                dns=_fmt(config.dns_listen),
                http=_fmt(config.http_listen),
                api=_fmt(config.api_listen),
            ),
            ttl=config.ttl,
            on_new_lease=self._on_new_lease,
        )
        self.tasks = TaskStatus()
        self.state_changed = asyncio.Event()
        self.dns: Any = None
        self.dns_workers: Any = None
        self.nginx: Any = None
        self.api: Any = None
        self.started_at = time.monotonic()

    # ------------------------------------------------------------------ lifecycle
    def _local_change(self) -> None:
        """This node's containers changed (listed anew, or one is being stopped): re-serve."""
        self.state_changed.set()

    def routing_state(self) -> ClusterState:
        """What this node's DNS and nginx serve: etcd's view, with our own instances as Docker shows them."""
        state = self.mirror.state()
        if not self.reconciler.listed:
            return state
        return local_view(state, node_id=self.config.node_id, routable=self.reconciler.routable())

    def _on_new_lease(self, lease: int) -> None:
        self.reconciler.lease = lease
        self.reconciler.mark_dirty()

    async def _retry(self, what: str, fn: Callable[[], Awaitable[Any]], stop: asyncio.Event) -> bool:
        """Retry a start-up step until it works or ``stop`` is set (etcd/Docker may come later)."""
        policy = Backoff(base=0.5, max_delay=5.0)
        failures = 0
        while not stop.is_set():
            try:
                await fn()
                return True
            except DaprDockrError as exc:
                failures += 1
                log.error("%s failed (%s); retrying", what, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), policy.delay(failures))
        return False

    async def _load_mirror(self) -> None:
        kvs, revision = await self.store.read_prefix(self.schema.root)
        self.mirror.reset(kvs, revision=revision)
        self.state_changed.set()

    async def start(self, stop: asyncio.Event) -> bool:
        """Connect to etcd and Docker, load state, register the node, start DNS and nginx."""
        cfg = self.config
        prepare_state_dir(cfg.state_dir)
        if not await self._retry("connecting to Docker", self.runtime.ping, stop):
            return False
        if not await self._retry("reading etcd", self._load_mirror, stop):
            return False
        if not await self._retry("registering the node", self.heartbeat.register, stop):
            return False
        if cfg.dns_listen is not None:
            from daprdockr.adapters.dnsserver import DnsServer

            self.dns = DnsServer(
                listen=cfg.dns_listen, upstreams=list(cfg.dns_upstreams) or None, ttl=cfg.dns_ttl,
                reuse_port=cfg.dns_workers > 0,
            )
            await self.dns.start()
            self.dns.update(self.routing_state())
            if cfg.dns_workers > 0:
                from daprdockr.adapters.dns_workers import DnsWorkerPool

                self.dns_workers = DnsWorkerPool(
                    listen=(cfg.dns_listen[0], self.dns.port), upstreams=self.dns.upstreams,
                    ttl=cfg.dns_ttl, count=cfg.dns_workers,
                )
                self.dns_workers.update(self.routing_state())
                await self.dns_workers.start()
                self.dns.spread_queries(members=cfg.dns_workers + 1)
        if cfg.http_listen is not None:
            from daprdockr.adapters.proxy import NginxManager

            self.nginx = NginxManager(
                state_dir=cfg.state_dir / cfg.node_id / "nginx",
                listen=cfg.http_listen,
                binary=cfg.nginx_binary,
            )
            await self.nginx.start()
            self.nginx.update(self.routing_state())
        if cfg.api_listen is not None:
            from daprdockr.agent.api import AgentApi

            self.api = AgentApi(agent=self, listen=cfg.api_listen, max_log_streams=cfg.max_log_streams,
                                token=api_token(cfg.state_dir, cfg.api_token_file))
            await self.api.start()
        log.info(
            "agent %s up: address %s, etcd %s, dns %s, http %s",
            cfg.node_id, cfg.advertise_ip, ",".join(map(str, cfg.etcd)),
            _fmt(cfg.dns_listen) or "off", _fmt(cfg.http_listen) or "off",
        )
        return True

    async def _watch(self) -> None:
        async for ev in self.store.watch(start_revision=self.mirror.revision + 1):
            if ev.kind == "resync":
                await self._load_mirror()
                self.reconciler.mark_dirty()
            else:
                self._apply(ev)

    def _apply(self, ev: WatchEvent) -> None:
        """Apply one event to the mirror; if it changed anything, fan out and reconcile.

        Watch events and, read-your-writes, the events of our own confirmed writes (registered
        as a store write listener) both come here; the watch echo of our own write is dropped.
        """
        if self.mirror.apply(ev):
            self.state_changed.set()
            self.reconciler.mark_dirty()

    async def _docker_events(self) -> None:
        async for _event in self.runtime.events():
            self.reconciler.mark_containers_dirty()
        raise DaprDockrError("docker event stream ended", transient=True)

    async def _fanout(self) -> None:
        """Push state to DNS and nginx on every change; keep the node's instance count."""
        while True:
            await self.state_changed.wait()
            self.state_changed.clear()
            state = self.routing_state()
            if self.dns is not None:
                self.dns.update(state)
            if self.dns_workers is not None:
                self.dns_workers.update(state)
            if self.nginx is not None:
                self.nginx.update(state)
            mine = sum(1 for r in state.instances.values() if r.node == self.config.node_id)
            self.heartbeat.set_instances(mine)

    async def _settle(self) -> None:
        """Enable claims once peers had a chance to register (spread, not first-come-takes-all)."""
        await asyncio.sleep(min(1.0, self.config.ttl / 5))
        while True:
            self.reconciler.claiming = self.heartbeat.healthy
            await asyncio.sleep(0.2)

    async def run(self, stop: asyncio.Event) -> int:
        """Start, run every task until ``stop`` is set, then shut down in order."""
        try:
            if not await self.start(stop):
                return 0
        except DaprDockrError as exc:
            log.error("agent start failed: %s", exc)
            await self._stop_parts()
            await self._close()
            return 1
        roots: dict[str, Callable[[], Awaitable[None]]] = {
            "heartbeat": self.heartbeat.run,
            "etcd-watch": self._watch,
            "docker-events": self._docker_events,
            "reconcile": self.reconciler.run,
            "fanout": self._fanout,
            "settle": self._settle,
        }
        if self.dns_workers is not None:
            roots["dns-workers"] = self.dns_workers.run
        if self.nginx is not None:
            roots["nginx"] = self.nginx.run
        try:
            async with asyncio.TaskGroup() as tg:
                running = [
                    tg.create_task(guarded(n, f, status=self.tasks), name=n) for n, f in roots.items()
                ]
                await stop.wait()
                log.info("shutting down")
                for task in running:
                    task.cancel()
        finally:
            await self.shutdown()
        return 0

    async def shutdown(self) -> None:
        """Ordered, time-limited: instances, then API, then DNS and its workers, nginx last."""
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
        await self._stop_parts()
        try:
            async with asyncio.timeout(5):
                await self._close()
        except Exception:
            log.exception("closing the etcd and Docker clients failed")

    async def _stop_parts(self) -> None:
        """Stop what :meth:`start` started, in order (API, DNS, DNS workers, nginx last)."""
        for name in ("api", "dns", "dns_workers", "nginx"):
            part = getattr(self, name)
            if part is None:
                continue
            try:
                async with asyncio.timeout(5):
                    await part.stop()
            except Exception:
                log.exception("stopping %s failed", name)

    async def _release_all(self) -> None:
        """Release before stop: revoke the lease (every key of ours goes at once), then stop."""
        containers = await self.runtime.list_managed()
        try:
            await self.heartbeat.release()
        except DaprDockrError as exc:
            log.error("could not revoke the lease (%s); its keys expire within %ds", exc, self.config.ttl)
        await asyncio.gather(
            *(self.runtime.remove(c.id, grace=self.config.stop_timeout) for c in containers),
            return_exceptions=True,
        )
        log.info("released the lease and stopped %d containers", len(containers))

    async def _close(self) -> None:
        await self.runtime.close()
        await self.store.close()


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    count = 0

    def on_signal(signum: int) -> None:
        nonlocal count
        count += 1
        if count > 1:
            log.warning("second signal: exiting now")
            os._exit(128 + signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)


async def serve(config: AgentConfig) -> int:
    stop = asyncio.Event()
    _install_signals(stop)
    return await Agent(config).run(stop)


def run_agent(config: AgentConfig) -> int:
    """Run the agent until SIGTERM/SIGINT; returns the process exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    result: int = runner(serve(config))
    return result
