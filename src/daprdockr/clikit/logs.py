"""Client side of ``daprdockr logs``: stream an instance's logs from the agent that runs it, or a
whole service's merged log (``[n] line``) from one agent, which gathers every instance's."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import aiohttp

from daprdockr.adapters.sockets import host_networks
from daprdockr.adapters.statedir import TOKEN_FILE, default_state_dir, read_token
from daprdockr.core.names import ServiceName
from daprdockr.errors import DaprDockrError, NotFoundError


def on_this_host(api: str) -> bool:
    """Whether the API address ``host:port`` is one of this host's own (loopback included)."""
    host = api.rpartition(":")[0].strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified or any(ip in net for net in host_networks())


def client_token(given: Path | None, *, api: str) -> str:
    """The API token to send to the agent at ``api``: from ``given``, else, if that agent runs on
    this host, the local agent's ``<state dir>/api-token`` if this user can read it, else none (an
    agent on loopback needs none).  The local agent's token never goes to another host: each
    agent makes its own, and it would cross the network in clear text (for several hosts, give
    every agent and client the same ``--api-token-file``)."""
    if given is not None:
        return read_token(given)
    if not on_this_host(api):
        return ""
    local = default_state_dir() / TOKEN_FILE
    try:
        return read_token(local) if local.is_file() else ""
    except DaprDockrError:
        return ""


async def stream_logs(
    *, api: str, service: ServiceName, number: int | None, tail: int, follow: bool, token: str = ""
) -> None:
    """GET ``/v1/logs/<group>/<service>/<n>`` on ``api`` (host:port), or with ``number`` None the
    service's merged log ``/v1/logs/<group>/<service>``, and copy it to stdout."""
    url = f"http://{api}/v1/logs/{service.group}/{service.service}" + (f"/{number}" if number is not None else "")
    params = {"tail": str(tail), "follow": "1" if follow else "0"}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=None if follow else 30, connect=3)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                session.get(url, params=params, headers=headers) as resp:
            if resp.status == 401:
                raise DaprDockrError(f"agent at {api} needs its API token: give --api-token-file "
                                     "(the agent's <state dir>/api-token)")
            if resp.status == 404:
                raise NotFoundError(f"agent at {api}: {await resp.text()}")
            if resp.status != 200:
                raise DaprDockrError(f"agent at {api} answered {resp.status}: {await resp.text()}")
            async for chunk in resp.content.iter_any():
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
    except aiohttp.ClientError as exc:
        raise DaprDockrError(f"agent API {api} unreachable: {exc}", transient=True) from exc
