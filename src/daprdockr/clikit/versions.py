"""The version report of ``daprdockr version`` / ``daprdockr --version``.

DaprDockr's own version, where it is installed (and its Lua module), then etcd, Docker and
nginx as found here: every component's probes run at once, each within ``limit`` seconds;
for one component the first probe that finds a version wins (etcd: the server behind
``--etcd``, then ``etcd --version``, then ``etcdctl version``; Docker: the engine's API socket,
then ``docker version``; nginx: ``nginx -v``).
"""

from __future__ import annotations

import asyncio
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import daprdockr
from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.nginx_setup import LUA_DIR
from daprdockr.adapters.version_probe import (
    PROBE_TIMEOUT,
    command_probe,
    docker_command_probe,
    docker_engine_probe,
    etcd_server_probe,
)
from daprdockr.core.versions import ComponentVersion, Probe, first_found


def own_version() -> ComponentVersion:
    where = Path(daprdockr.__file__).resolve().parent
    return ComponentVersion(name="daprdockr", version=daprdockr.__version__,
                            source=f"python {platform.python_version()}, {where}, lua {LUA_DIR}")


async def collect(*, store: EtcdStore | None, limit: float = PROBE_TIMEOUT) -> list[ComponentVersion]:
    """Every component's version (or "not found" and why); ``store``: the etcd server to ask first."""

    async def etcd() -> list[Probe]:
        probes = [await etcd_server_probe(store, limit=limit)] if store is not None else []
        for tool, argv in (("etcd", ["etcd", "--version"]), ("etcdctl", ["etcdctl", "version"])):
            if any(p.version for p in probes):
                break
            probes.append(await command_probe(tool, argv, limit=limit))
        return probes

    async def docker() -> list[Probe]:
        engine = await docker_engine_probe(limit=limit)
        return [engine] if engine.version else [engine, await docker_command_probe(limit=limit)]

    async def nginx() -> list[Probe]:
        return [await command_probe("nginx", ["nginx", "-v"], limit=limit)]

    found: Sequence[list[Probe]] = await asyncio.gather(etcd(), docker(), nginx())
    return [own_version(), *(first_found(name, probes) for name, probes in zip(("etcd", "docker", "nginx"),
                                                                               found, strict=True))]


def render(components: Sequence[ComponentVersion]) -> str:
    return "\n".join(c.line() for c in components)


def as_json(components: Sequence[ComponentVersion]) -> list[dict[str, Any]]:
    return [c.to_dict() for c in components]
