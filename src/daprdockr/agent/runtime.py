"""What the agent needs of a container runtime, and the choice of one (``--runtime docker|hollow``).

:class:`AgentRuntime` is everything the agent's parts use: the reconciler's
:class:`~daprdockr.adapters.docker_runtime.ContainerRuntime`, the health checks'
:class:`~daprdockr.health.CheckRuntime`, the API's :class:`~daprdockr.agent.view.LogSource`,
and the engine itself (ping, events, the containers' networks, close).  :func:`make_runtime`
builds Docker's (:class:`~daprdockr.adapters.docker_runtime.DockerRuntime`) or a hollow node's
(:class:`~daprdockr.adapters.hollow_runtime.HollowRuntime`: containers in memory, no Docker).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from daprdockr.adapters.docker_runtime import ContainerRuntime, DockerRuntime
from daprdockr.adapters.hollow_runtime import HollowRuntime
from daprdockr.adapters.registry_credentials import DockerCredentials
from daprdockr.agent.config import AgentConfig
from daprdockr.agent.view import LogSource
from daprdockr.core.containers import ContainerInfo
from daprdockr.core.model import ServiceSpec
from daprdockr.health import CheckRuntime, NetworkCheck


class AgentRuntime(ContainerRuntime, CheckRuntime, LogSource, Protocol):
    """A node's container runtime as the agent uses it."""

    async def restart_container(
        self, container: ContainerInfo, *, spec: ServiceSpec, grace: float, signal: str | None = None
    ) -> ContainerInfo: ...  # an operator's restart of a running container: same id, started again

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    async def container_networks(self) -> list[str]: ...

    def events(self) -> AsyncIterator[object]: ...


@dataclass(frozen=True, slots=True)
class RuntimeChoice:
    """The runtime, and what answers http/tcp health checks in its place (None: a real connection)."""

    runtime: AgentRuntime
    network_check: NetworkCheck | None = None


def make_runtime(config: AgentConfig) -> RuntimeChoice:
    if config.runtime == "hollow":
        hollow = HollowRuntime(node_id=config.node_id, advertise_ip=config.advertise_ip, options=config.hollow)
        return RuntimeChoice(runtime=hollow, network_check=hollow.network_check)
    credentials = DockerCredentials(path=config.docker_config) if config.docker_config is not None else None
    return RuntimeChoice(runtime=DockerRuntime(
        node_id=config.node_id, advertise_ip=config.advertise_ip, url=config.docker,
        dns_server=config.container_dns, allow_bind=config.allow_bind, credentials=credentials))
