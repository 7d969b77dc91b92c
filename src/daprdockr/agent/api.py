"""The agent's HTTP API (aiohttp): health, status, container logs and Prometheus metrics.

* ``GET /healthz``   etcd lease, Docker, nginx, DNS, root task and etcd data checks; 503 when the
  lease, Docker or any root task is not running (named in ``checks.tasks.not_running``); malformed
  etcd keys are listed (``checks.etcd_data``) without failing the check; ``runtime`` says
  ``hollow`` for a test node without Docker (``--runtime hollow``).  ``checks.etcd_space``: etcd's
  database size against its quota, its alarms and the compactions; under the alarm NOSPACE or
  CORRUPT it is not ok and says why and what to do (status ``degraded``, still 200: this node keeps
  serving, and an agent restarted then could not even get a lease, since etcd refuses it too).
* ``GET /v1/status`` this node, its instances and its containers (as its runtime lists them now),
  cluster services desired vs running (JSON).
* ``GET /v1/cluster?min_revision=R&wait=2`` the cluster views ``svc ls``, ``status`` and ``nodes``
  show (services desired vs running, nodes, skipped keys), from this agent's mirror once it holds
  etcd revision ``R`` or later (waiting at most ``wait`` seconds; 503 with its revision if not): the
  CLI's read of a large cluster without reading and decoding every key itself.
* ``GET /v1/logs/<group>/<service>/<n>?tail=100&follow=0`` logs of an instance running on this
  node (text); 409 with the owner's API address when another node runs it; 404 if unknown.  The
  container is the one this node's Docker engine reports with this node's labels for that
  instance (never an id read from etcd); logs use a Docker connection pool of their own, and at
  most ``max_log_streams`` run at once (429 beyond).

Access: ``/healthz`` and ``/metrics`` are open.  Whenever the API listens beyond loopback, every
other endpoint that reveals container output (``/v1/logs``) or changes anything needs
``Authorization: Bearer <token>``; the token is read from ``--api-token-file`` or generated on
first start into ``<state dir>/api-token`` (mode 0600), where ``daprdockr logs`` finds it too.
* ``GET /metrics``   Prometheus text format; every family is documented in the README.
* the dashboard (``GET /``, ``/static/``, ``/v1/dashboard``, its stream, ``/v1/services/<g>/<s>``)
  and the security headers of every response: :mod:`.dashboard_api`.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import resource
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from daprdockr.agent.dashboard_api import DashboardHandlers, add_routes
from daprdockr.agent.metrics import render_metrics
from daprdockr.agent.view import AgentView, DashboardSource, LogSource
from daprdockr.core.names import ServiceName, instance_order
from daprdockr.core.records import DOCKER_RUNTIME
from daprdockr.core.state import ClusterState
from daprdockr.core.status import instance_rows, node_rows, service_rows
from daprdockr.errors import DaprDockrError, ValidationError

log = logging.getLogger(__name__)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, indent=1, sort_keys=True), status=status,
                        content_type="application/json")


def _bad_keys(state: ClusterState) -> dict[str, Any]:
    """Malformed keys under the prefix: listed, never fatal (their services are frozen as they are)."""
    keys = {key: reason for key, reason in state.skipped}
    return {"ok": not keys, "keys": keys,
            "detail": f"{len(keys)} malformed key(s) skipped" if keys else "ok"}


def listens_beyond_loopback(host: str) -> bool:
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a name may resolve to anything


class AgentApi:
    name = "api"

    def __init__(
        self, *, view: AgentView, logs: LogSource, listen: tuple[str, int], token: str = "",
        max_log_streams: int = 16, routes: Sequence[Callable[[web.Application], None]] = (),
        dashboard: DashboardSource | None = None,
    ) -> None:
        self.view = view
        self.log_source = logs
        self.listen = listen
        self.port = listen[1]
        self.token = token if listens_beyond_loopback(listen[0]) else ""
        self.max_log_streams = max_log_streams
        self.routes = routes  # more endpoints: each adds its own (action_routes, service_logs)
        self.dashboard = dashboard
        self.dashboard_routes: DashboardHandlers | None = None
        self.log_streams = 0
        self._runner: web.AppRunner | None = None
        self._docker_ok = (0.0, True, "")

    def _authorized(self, request: web.Request) -> bool:
        if not self.token:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/v1/status", self.status)
        app.router.add_get("/v1/cluster", self.cluster)
        app.router.add_get("/v1/logs/{group}/{service}/{number}", self.logs)
        app.router.add_get("/metrics", self.metrics)
        for more_routes in self.routes:
            more_routes(app)
        self.dashboard_routes = add_routes(app, source=self.dashboard, state=self.view.state,
                                           authorized=self._authorized)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.listen[0], self.listen[1])
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise DaprDockrError(f"API cannot listen on {self.listen[0]}:{self.listen[1]}: {exc}") from exc
        self.port = self._runner.addresses[0][1]

    async def run(self) -> None:
        """Nothing to supervise: aiohttp serves on its own until :meth:`stop`."""
        await asyncio.Event().wait()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _docker_check(self) -> tuple[bool, str]:
        checked, ok, detail = self._docker_ok
        if time.monotonic() - checked > 1.0:
            try:
                await self.view.docker_ping()
                ok, detail = True, "ok"
            except DaprDockrError as exc:
                ok, detail = False, str(exc)
            self._docker_ok = (time.monotonic(), ok, detail)
        return ok, detail

    async def healthz(self, request: web.Request) -> web.Response:
        v = self.view
        docker_ok, docker_detail = await self._docker_check()
        lease = v.lease()
        not_running = sorted(name for name, st in v.tasks().items() if st != "running")
        checks: dict[str, dict[str, Any]] = {
            "etcd": {"ok": lease.healthy, "lease": f"{lease.lease:x}",
                     "detail": "lease alive" if lease.healthy else "lease not confirmed within TTL"},
            "docker": {"ok": docker_ok, "detail": docker_detail if v.runtime == DOCKER_RUNTIME
                       else f"{v.runtime} runtime: no Docker, its containers are in memory"},
            "tasks": {"ok": not not_running, "not_running": not_running, "detail": dict(v.tasks())},
            "etcd_data": _bad_keys(v.state()),
            "etcd_space": v.etcd_health().to_dict(),
        }
        nginx = v.nginx()
        if nginx is not None:
            checks["nginx"] = {"ok": nginx.healthy, "detail": nginx.last_error or "ok", "routes": nginx.routes,
                               "applied_revision": nginx.applied_revision}
        dns = v.dns()
        if dns is not None:
            detail = dns.address + (f", {dns.workers_alive}/{dns.workers} workers" if dns.workers else "")
            checks["dns"] = {"ok": True, "detail": detail}
        critical = checks["etcd"]["ok"] and checks["docker"]["ok"] and checks["tasks"]["ok"]
        status = "ok" if all(c["ok"] for c in checks.values()) else "degraded"
        return _json({"status": status, "node": v.node_id, "runtime": v.runtime, "checks": checks},
                     200 if critical else 503)

    async def status(self, request: web.Request) -> web.Response:
        v = self.view
        state = v.state()
        lease = v.lease()
        nginx = v.nginx()
        reconcile = v.reconcile()
        mine = [r for r in instance_rows(state, now=time.time()) if r["node"] == v.node_id]
        try:
            containers: list[dict[str, Any]] | None = [
                {"service": str(c.service), "instance": c.number, "container_id": c.id[:12],
                 "state": "paused" if c.paused else "running" if c.running else "exited"}
                for c in sorted(await v.containers(), key=lambda c: (*instance_order(*c.key), c.id))]
            containers_error = ""
        except DaprDockrError as exc:
            containers, containers_error = None, str(exc)
        return _json({
            "node": {"id": v.node_id, "address": v.address, "lease": f"{lease.lease:x}", "healthy": lease.healthy,
                     "runtime": v.runtime},
            "instances": mine,
            "containers": containers,  # what this node's runtime runs now (None: it did not answer)
            "containers_error": containers_error,
            "services": service_rows(state),
            "nodes": sorted(state.nodes),
            "tasks": dict(v.tasks()),
            "invalid_keys": _bad_keys(state)["keys"],
            "etcd": v.etcd_health().to_dict(),
            "routing": {"applied_revision": v.applied_revision(), "routes": nginx.routes if nginx else 0,
                        "nginx_error": nginx.last_error if nginx else ""},
            "reconcile": {"count": reconcile.passes, "last_error": reconcile.last_error,
                          "unremovable": list(reconcile.unremovable)},
        })

    async def cluster(self, request: web.Request) -> web.Response:
        try:
            min_revision = int(request.query.get("min_revision", "0"))
            wait = float(request.query.get("wait", "2"))
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        deadline = time.monotonic() + max(0.0, min(wait, 10.0))
        state = self.view.state()
        while state.revision < min_revision and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # (only while a reader waits for the watch to catch up)
            state = self.view.state()
        if state.revision < min_revision:
            return _json({"error": f"this agent's state is at revision {state.revision}, not yet {min_revision}",
                          "revision": state.revision}, 503)
        return _json({"node": self.view.node_id, "revision": state.revision, "services": service_rows(state),
                      "nodes": node_rows(state, now=time.time()), "skipped_keys": [k for k, _ in state.skipped]})

    async def logs(self, request: web.Request) -> web.StreamResponse:
        v = self.view
        if not self._authorized(request):
            return _json({"error": "this endpoint needs Authorization: Bearer <token> (see --api-token-file)"}, 401)
        try:
            name = ServiceName.parse(f"{request.match_info['service']}.{request.match_info['group']}")
            number = int(request.match_info["number"])
            tail = max(0, min(100_000, int(request.query.get("tail", "100"))))
        except (ValidationError, ValueError) as exc:
            return _json({"error": str(exc)}, 400)
        follow = request.query.get("follow", "0") in ("1", "true")
        state = v.state()
        rec = state.instances.get((name, number))
        if rec is not None and rec.node != v.node_id:
            owner = state.nodes.get(rec.node)
            return _json({"error": f"instance runs on node {rec.node}", "node": rec.node,
                          "api": owner.api if owner else ""}, 409)
        if self.log_streams >= self.max_log_streams:
            return _json({"error": f"{self.log_streams} log streams are open, at most {self.max_log_streams}"}, 429)
        self.log_streams += 1
        try:
            try:
                container = await self.log_source.find_instance(service=name, number=number)
            except DaprDockrError as exc:
                return _json({"error": str(exc)}, 503)
            if container is None:
                return _json({"error": f"instance {number} of {name} has no container on this node"}, 404)
            resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
            await resp.prepare(request)
            try:
                async for line in self.log_source.logs(container.id, tail=tail, follow=follow):
                    await resp.write(line.encode())
            except DaprDockrError as exc:
                await resp.write(f"\n[daprdockr: {exc}]\n".encode())
            except ConnectionResetError:
                pass
            return resp
        finally:
            self.log_streams -= 1

    async def metrics(self, request: web.Request) -> web.Response:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        text = render_metrics(self.view, cpu_seconds=usage.ru_utime + usage.ru_stime)
        return web.Response(text=text, content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})
