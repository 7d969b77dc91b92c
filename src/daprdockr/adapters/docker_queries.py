"""What the engine reports about this node's containers, as :class:`~daprdockr.core.containers.ContainerInfo`:
listings and inspections (an inspection of an exited container says how long it ran; every
listing filters on ``daprdockr.node=<this node>``, so several agents can share one engine and
none sees another's containers, nor any unlabelled container), health checks, logs, and the
bridge network's subnets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import aiodocker
import aiohttp
from aiodocker.containers import DockerContainer

from daprdockr.adapters.docker_client import DockerEngine, translate
from daprdockr.core.containers import (
    LABEL_GROUP,
    LABEL_INSTANCE,
    LABEL_NODE,
    LABEL_SERVICE,
    LABEL_SPEC_HASH,
    ContainerInfo,
)
from daprdockr.core.names import ServiceName
from daprdockr.errors import ContainerError, ValidationError

log = logging.getLogger(__name__)

# The fields of a ``GET /containers/json`` entry that :func:`info_from_summary` reads.
SUMMARY_FIELDS = ("Id", "Labels", "Ports", "State", "Created")


def summary_of(container: DockerContainer) -> dict[str, Any]:
    """The ``GET /containers/json`` entry aiodocker's ``containers.list`` made ``container`` of
    (the fields :func:`info_from_summary` reads)."""
    return {field: container[field] for field in SUMMARY_FIELDS if field in container}


def info_from_summary(data: dict[str, Any]) -> ContainerInfo | None:
    """ContainerInfo from a ``GET /containers/json`` entry; None if its labels are malformed."""
    labels = data.get("Labels") or {}
    try:
        service = ServiceName.parse(f"{labels[LABEL_SERVICE]}.{labels[LABEL_GROUP]}")
        number = int(labels[LABEL_INSTANCE])
    except (KeyError, ValueError, ValidationError):
        return None
    ports = sorted(
        {
            (f"{p['PrivatePort']}/{p.get('Type', 'tcp')}", int(p["PublicPort"]))
            for p in data.get("Ports") or []
            if p.get("PublicPort")
        }
    )
    return ContainerInfo(
        id=str(data["Id"]),
        service=service,
        number=number,
        node=str(labels.get(LABEL_NODE, "")),
        spec_hash=str(labels.get(LABEL_SPEC_HASH, "")),
        running=data.get("State") in ("running", "paused"),
        ports=tuple(ports),
        created=float(data.get("Created", 0)),
        paused=data.get("State") == "paused",
        doomed=data.get("State") in ("dead", "removing"),
    )


def run_time(state: dict[str, Any]) -> float | None:
    """Seconds between an exited container's ``StartedAt`` and ``FinishedAt`` (RFC 3339, as the
    engine stamped them); ``None`` while it runs, before its first start, or if either is unreadable."""
    if state.get("Running") or state.get("Paused"):
        return None
    try:
        started = datetime.fromisoformat(str(state["StartedAt"]))
        finished = datetime.fromisoformat(str(state["FinishedAt"]))
    except (KeyError, ValueError):
        return None
    if started.year < 2 or finished < started:  # (0001-01-01: never started, or never finished)
        return None
    return (finished - started).total_seconds()


def info_from_inspect(data: dict[str, Any]) -> ContainerInfo | None:
    """ContainerInfo from a ``GET /containers/<id>/json`` body (right after a start; after an exit,
    with how long the run lasted)."""
    ports = [
        {"PrivatePort": int(key.split("/")[0]), "Type": key.split("/")[1], "PublicPort": int(b["HostPort"])}
        for key, bindings in ((data.get("NetworkSettings") or {}).get("Ports") or {}).items()
        for b in bindings or []
        if b.get("HostPort")
    ]
    state = data.get("State") or {}
    info = info_from_summary(
        {
            "Id": data.get("Id", ""),
            "Labels": (data.get("Config") or {}).get("Labels") or {},
            "Ports": ports,
            "State": "paused" if state.get("Paused") else "running" if state.get("Running")
            else "dead" if state.get("Dead") else str(state.get("Status", "")),
        }
    )
    ran_for = run_time(state)
    return info if info is None or ran_for is None else replace(info, ran_for=ran_for)


class ContainerQueries(DockerEngine):
    """Reads of this node's containers (a part of :class:`~daprdockr.adapters.docker_runtime.DockerRuntime`)."""

    async def list_managed(self) -> list[ContainerInfo]:
        """This node's labelled containers, running or not."""
        listed = await self._do(
            self.docker.containers.list(all=True, filters={"label": [f"{LABEL_NODE}={self.node_id}"]}),
            what="list",
        )
        result = []
        for container in listed:
            info = info_from_summary(summary_of(container))
            if info is None:
                log.warning("ignoring container %s with malformed daprdockr labels", container.id)
            elif info.node == self.node_id:
                result.append(info)
        return result

    async def container_networks(self) -> list[str]:
        """Subnets (CIDR) of the network this node's containers attach to (Docker's ``bridge``)."""

        async def show() -> dict[str, Any]:
            return await (await self.docker.networks.get("bridge")).show()

        data = await self._do(show(), what="inspect network bridge")
        return [str(c["Subnet"]) for c in ((data.get("IPAM") or {}).get("Config") or []) if c.get("Subnet")]

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        """One container of ours as the engine reports it now; ``None`` if it is gone."""
        try:
            data = await self._do(self.docker.containers.container(container_id).show(), what="inspect")
        except ContainerError as exc:
            if "No such container" in str(exc):
                return None
            raise
        return info_from_inspect(data)

    async def docker_health(self, container_id: str) -> str:
        """The image HEALTHCHECK's status Docker reports (``healthy``, ``unhealthy``, ``starting``, or "")."""
        data = await self._do(self.docker.containers.container(container_id).show(), what="inspect")
        return str(((data.get("State") or {}).get("Health") or {}).get("Status", ""))

    async def find_instance(self, *, service: ServiceName, number: int) -> ContainerInfo | None:
        """This node's container of ``service``/``number`` as the engine reports it (by our labels,
        never by an id read from etcd); the running one, else the newest."""
        labels = [f"{LABEL_NODE}={self.node_id}", f"{LABEL_SERVICE}={service.service}",
                  f"{LABEL_GROUP}={service.group}", f"{LABEL_INSTANCE}={number}"]
        listed = await self._do(self.logs_docker.containers.list(all=True, filters={"label": labels}), what="list")
        found = [i for i in (info_from_summary(summary_of(c)) for c in listed)
                 if i is not None and i.node == self.node_id and i.key == (service, number)]
        return max(found, key=lambda c: (c.running, c.created), default=None)

    async def logs(self, container_id: str, *, tail: int = 100, follow: bool = False) -> AsyncIterator[str]:
        """Log lines (stdout and stderr) of one of our containers (over the logs connection pool)."""
        c = self.logs_docker.containers.container(container_id)
        try:
            if follow:
                async for line in c.log(stdout=True, stderr=True, follow=True, tail=tail):
                    yield line
            else:
                for line in await c.log(stdout=True, stderr=True, tail=tail):
                    yield line
        except (aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
            raise translate(exc, what="logs") from exc

    async def _pid(self, container_id: str) -> int:
        """The container's main process id (0: not running, or gone)."""
        try:
            data = await self._do(self.docker.containers.container(container_id).show(), what="inspect")
        except ContainerError:
            return 0
        return int((data.get("State") or {}).get("Pid") or 0)

    async def exec_ok(self, container_id: str, cmd: Sequence[str], *, within: float) -> bool:
        """Run ``cmd`` in the container (a health check); True if it exits 0 within ``within`` s."""
        c = self.docker.containers.container(container_id)
        try:
            async with asyncio.timeout(within):
                execution = await c.exec(list(cmd), stdout=True, stderr=True)
                async with execution.start(detach=False) as stream:
                    while await stream.read_out() is not None:
                        pass
                info = await execution.inspect()
        except (TimeoutError, aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
            log.debug("health cmd in %s: %r", container_id[:12], exc)
            return False
        return info.get("ExitCode") == 0
