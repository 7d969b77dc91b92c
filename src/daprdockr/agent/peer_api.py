"""Calls from this agent to another agent's API (aiohttp client): an action forwarded to the node
that owns an instance, and the log stream of an instance another node runs.  Every call carries
this agent's own API token as ``Authorization: Bearer`` (agents of one cluster share it through
``--api-token-file``), is bounded in time, and fails as a :class:`~daprdockr.errors.DaprDockrError`."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from daprdockr.core.records import NodeRecord
from daprdockr.errors import DaprDockrError

FORWARDED_HEADER = "X-DaprDockr-Forwarded"  # set on a forwarded action: the owner never forwards it again


def api_address(node: NodeRecord) -> str:
    """``host:port`` to reach ``node``'s API: its published address, its advertise IP in place of
    an unspecified one (an API listening on 0.0.0.0 or ::)."""
    host, _, port = node.api.rpartition(":")
    try:
        unspecified = ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        unspecified = False
    if unspecified:
        host = f"[{node.address}]" if ":" in node.address else node.address
    return f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class PeerReply:
    status: int
    body: Mapping[str, Any] = field(default_factory=dict)


class PeerApi:
    """Another agent's API, called with this agent's ``token``."""

    def __init__(self, *, token: str, timeout: float = 30.0, connect: float = 3.0) -> None:
        self.token = token
        self.timeout = timeout
        self.connect = connect

    def _headers(self, extra: Mapping[str, str]) -> dict[str, str]:
        return {**({"Authorization": f"Bearer {self.token}"} if self.token else {}), **extra}

    async def post_json(self, api: str, path: str, body: Mapping[str, Any], *,
                        headers: Mapping[str, str] | None = None) -> PeerReply:
        """POST ``body`` as JSON; the reply's status and JSON object (a body that is not one is
        wrapped as ``{"error": text}``)."""
        timeout = aiohttp.ClientTimeout(total=self.timeout, connect=self.connect)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
                    f"http://{api}{path}", json=dict(body), headers=self._headers(headers or {})) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DaprDockrError(f"agent API {api} unreachable: {exc or type(exc).__name__}", transient=True) from exc
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        return PeerReply(status=status, body=data if isinstance(data, dict) else {"error": text[:500]})

    async def stream(self, api: str, path: str, *, params: Mapping[str, str], follow: bool) -> AsyncIterator[str]:
        """GET ``path`` and yield its text as it arrives (chunks, not lines); an answer other than
        200 raises, with its status and the start of its text."""
        timeout = aiohttp.ClientTimeout(total=None if follow else self.timeout, connect=self.connect)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
                    f"http://{api}{path}", params=dict(params), headers=self._headers({})) as resp:
                if resp.status != 200:
                    raise DaprDockrError(f"agent API {api} answered {resp.status}: {(await resp.text())[:200]}")
                async for chunk in resp.content.iter_any():
                    yield chunk.decode(errors="replace")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DaprDockrError(f"agent API {api}: {exc or type(exc).__name__}", transient=True) from exc
