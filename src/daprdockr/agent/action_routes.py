"""The API's action endpoints (POST, JSON bodies), given an :class:`~daprdockr.agent.actions.Actions` port:

* ``POST /v1/services/<group>/<service>/scale`` ``{"instances": N}``
* ``POST /v1/services/<group>/<service>/rollback`` ``{"to": V}`` or ``{}`` (the version before the newest)
* ``POST /v1/services/<group>/<service>/instances/<n>/restart`` ``{}``
* ``POST /v1/nodes/<node>/drain`` ``{}`` and ``POST /v1/nodes/<node>/undrain`` ``{}``

Every action needs ``Authorization: Bearer <token>`` (the agent's API token), also on loopback:
without it 403 and nothing changes (a page of another site cannot send that header).  A body
that is not ``application/json`` is refused with 415.  Errors are ``{"error": ...}``: 400 bad
input, 404 unknown service, instance or node, 409 a conflict with the current state, 503 etcd
or Docker unreachable.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from daprdockr.agent.access import bearer_ok
from daprdockr.agent.actions import Actions, Reply
from daprdockr.agent.peer_api import FORWARDED_HEADER
from daprdockr.core.names import ServiceName, validate_label
from daprdockr.errors import (
    ConflictError,
    DaprDockrError,
    NotFoundError,
    RuntimeUnavailableError,
    StoreUnavailableError,
    ValidationError,
)

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.Response]]


def _answer(body: dict[str, Any], status: int) -> web.Response:
    return web.Response(text=json.dumps(body, sort_keys=True), status=status, content_type="application/json")


def error_status(exc: DaprDockrError) -> int:
    """The HTTP status of an action's error."""
    if isinstance(exc, ValidationError):
        return 400
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, StoreUnavailableError | RuntimeUnavailableError) or exc.transient:
        return 503
    return 409  # refused for good by etcd or Docker as things are (a terminal error)


def _int_field(body: dict[str, Any], name: str, *, minimum: int) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(f"must be an integer >= {minimum}, not {value!r}", field=name)
    return value


def _service(request: web.Request) -> ServiceName:
    return ServiceName.parse(f"{request.match_info['service']}.{request.match_info['group']}", field="service")


class ActionRoutes:
    """The action endpoints, guarded by the agent's API ``token`` (empty: every action refused)."""

    def __init__(self, *, actions: Actions, token: str) -> None:
        self.actions = actions
        self.token = token

    def add_routes(self, app: web.Application) -> None:
        base = "/v1/services/{group}/{service}"
        app.router.add_post(f"{base}/scale", self._guarded(self.scale))
        app.router.add_post(f"{base}/rollback", self._guarded(self.rollback))
        app.router.add_post(f"{base}/instances/{{number}}/restart", self._guarded(self.restart))
        app.router.add_post("/v1/nodes/{node}/drain", self._guarded(self.drain))
        app.router.add_post("/v1/nodes/{node}/undrain", self._guarded(self.undrain))

    def _guarded(self, action: Callable[[web.Request, dict[str, Any]], Awaitable[Reply]]) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            if not bearer_ok(request, self.token):
                return _answer({"error": "actions need Authorization: Bearer <the agent's API token>"}, 403)
            if request.content_type != "application/json":
                return _answer({"error": f"the body must be application/json, not {request.content_type!r}"}, 415)
            try:
                text = await request.text()
                body = json.loads(text) if text.strip() else {}
                if not isinstance(body, dict):
                    raise ValidationError("the body must be a JSON object")
                reply = await action(request, body)
            except ValueError as exc:  # (ValidationError, and JSON that does not parse)
                return _answer({"error": str(exc)}, 400)
            except DaprDockrError as exc:
                log.info("action %s %s refused: %s", request.method, request.path, exc)
                return _answer({"error": str(exc)}, error_status(exc))
            return _answer(dict(reply.body), reply.status)

        return handler

    async def scale(self, request: web.Request, body: dict[str, Any]) -> Reply:
        return await self.actions.scale(_service(request), instances=_int_field(body, "instances", minimum=0))

    async def rollback(self, request: web.Request, body: dict[str, Any]) -> Reply:
        to = None if body.get("to") is None else _int_field(body, "to", minimum=1)
        return await self.actions.rollback(_service(request), to=to)

    async def restart(self, request: web.Request, body: dict[str, Any]) -> Reply:
        try:
            number = int(request.match_info["number"])
        except ValueError:
            raise ValidationError(f"{request.match_info['number']!r} is not an instance number") from None
        if number < 1:
            raise ValidationError(f"instance numbers start at 1, not {number}")
        return await self.actions.restart(_service(request), number, forwarded=FORWARDED_HEADER in request.headers)

    async def drain(self, request: web.Request, body: dict[str, Any]) -> Reply:
        return await self.actions.drain(validate_label(request.match_info["node"], field="node"), on=True)

    async def undrain(self, request: web.Request, body: dict[str, Any]) -> Reply:
        return await self.actions.drain(validate_label(request.match_info["node"], field="node"), on=False)
