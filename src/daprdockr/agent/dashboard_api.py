"""The dashboard's HTTP endpoints on the agent API, and the security headers of every response.

* ``GET /`` the page (``static/index.html``, package data) and ``GET /static/<file>``: open.
* ``GET /v1/dashboard`` the model as JSON (``revision``, ``node``, ``services``, ``nodes``,
  ``instances``, ``events``; :mod:`daprdockr.core.dashboard`).
* ``GET /v1/dashboard/stream`` Server-Sent Events: ``retry: 1000``, then a ``snapshot`` event, or
  the ``change`` events after ``Last-Event-ID`` when the feed still holds them, then every change
  as it happens; ``: ping`` every :data:`PING_INTERVAL` seconds when idle.  Every open stream ends
  when the API shuts down (``on_shutdown``).
* ``GET /v1/services/<group>/<service>`` the spec as stored, why it is invalid, its history and
  its rollout.

The read-only data follows the API's rule (``authorized``: open when it listens on loopback,
else the Bearer token; 401 otherwise).  Every response (streams too, through
``on_response_prepare``) gets a strict Content-Security-Policy (no inline script), ``nosniff``, no
referrer and no framing; no CORS header is ever sent.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from daprdockr.agent.view import DashboardSource
from daprdockr.core.dashboard import service_detail
from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState
from daprdockr.errors import ValidationError

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                               "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
PING_INTERVAL = 15.0
# After a change, a stream waits this long for more before it writes: one write per client per
# LINGER under churn, instead of one per change (BENCHMARKS.md, "Dashboard").
LINGER = 0.25
UNAUTHORIZED = "this endpoint needs Authorization: Bearer <token> (see --api-token-file)"


def static_dir() -> Path | None:
    """The package's ``static/`` directory on disk (None if it is not shipped)."""
    path = importlib.resources.files("daprdockr").joinpath("static")
    return path if isinstance(path, Path) and path.is_dir() else None


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith("/static/"):  # (revalidated: an upgraded agent's modules load at once)
        response.headers.setdefault("Cache-Control", "no-cache")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, ensure_ascii=False), status=status, content_type="application/json")


class DashboardHandlers:
    def __init__(self, *, source: DashboardSource | None, state: Callable[[], ClusterState],
                 authorized: Callable[[web.Request], bool], ping_interval: float = PING_INTERVAL,
                 linger: float = LINGER) -> None:
        self.source = source
        self.state = state
        self.authorized = authorized
        self.ping_interval = ping_interval
        self.linger = linger

    async def index(self, request: web.Request) -> web.StreamResponse:
        static = static_dir()
        page = static / "index.html" if static is not None else None
        if page is None or not page.is_file():
            return web.Response(text="the dashboard's files are not installed", status=404)
        return web.Response(body=page.read_bytes(), content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def dashboard(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return _json({"error": UNAUTHORIZED}, 401)
        assert self.source is not None
        return web.Response(body=self.source.snapshot(), content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request):
            return _json({"error": UNAUTHORIZED}, 401)
        assert self.source is not None
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        sub = self.source.subscribe(last_event_id=request.headers.get("Last-Event-ID", ""))
        try:
            await resp.prepare(request)
            await resp.write(b"retry: 1000\n\n")
            while True:
                messages = await sub.next(idle=self.ping_interval)
                if messages is None:
                    break
                if messages and self.linger:
                    await asyncio.sleep(self.linger)
                    messages += await sub.next(idle=0) or []
                await resp.write(b"".join(messages) if messages else b": ping\n\n")
        except ConnectionResetError:  # (the client went away)
            pass
        finally:
            self.source.unsubscribe(sub)
        return resp

    async def service(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return _json({"error": UNAUTHORIZED}, 401)
        try:
            name = ServiceName.parse(f"{request.match_info['service']}.{request.match_info['group']}")
        except ValidationError as exc:
            return _json({"error": str(exc)}, 400)
        detail = service_detail(self.state(), name)
        if detail is None:
            return _json({"error": f"no service {name}"}, 404)
        return _json(detail)

    async def on_shutdown(self, app: web.Application) -> None:
        if self.source is not None:
            self.source.close_streams()


def add_routes(app: web.Application, *, source: DashboardSource | None, state: Callable[[], ClusterState],
               authorized: Callable[[web.Request], bool]) -> DashboardHandlers:
    """The dashboard's routes and the security headers on ``app`` (the data routes only with a ``source``)."""
    handlers = DashboardHandlers(source=source, state=state, authorized=authorized)
    app.on_response_prepare.append(security_headers)
    app.router.add_get("/", handlers.index)
    static = static_dir()
    if static is not None:
        app.router.add_static("/static", static)
    else:
        log.warning("the dashboard's static files are not installed: GET / answers 404")
    app.router.add_get("/v1/services/{group}/{service}", handlers.service)
    if source is not None:
        app.router.add_get("/v1/dashboard", handlers.dashboard)
        app.router.add_get("/v1/dashboard/stream", handlers.stream)
        app.on_shutdown.append(handlers.on_shutdown)
    return handlers
