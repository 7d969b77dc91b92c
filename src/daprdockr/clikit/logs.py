"""Client side of ``daprdockr logs``: stream an instance's logs from the agent that runs it."""

from __future__ import annotations

import sys

import aiohttp

from daprdockr.core.names import ServiceName
from daprdockr.errors import DaprDockrError, NotFoundError


async def stream_logs(*, api: str, service: ServiceName, number: int, tail: int, follow: bool) -> None:
    """GET ``/v1/logs/<group>/<service>/<n>`` on ``api`` (host:port) and copy it to stdout."""
    url = f"http://{api}/v1/logs/{service.group}/{service.service}/{number}"
    params = {"tail": str(tail), "follow": "1" if follow else "0"}
    timeout = aiohttp.ClientTimeout(total=None if follow else 30, connect=3)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url, params=params) as resp:
            if resp.status == 404:
                raise NotFoundError(f"agent at {api}: {await resp.text()}")
            if resp.status != 200:
                raise DaprDockrError(f"agent at {api} answered {resp.status}: {await resp.text()}")
            async for chunk in resp.content.iter_any():
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
    except aiohttp.ClientError as exc:
        raise DaprDockrError(f"agent API {api} unreachable: {exc}", transient=True) from exc
