"""Docker adapter (aiodocker): run, list, stop and watch this node's labelled containers, one class
made of one part per concern:

* :mod:`~daprdockr.adapters.docker_client`: the engine's clients, errors translated, its events;
* :mod:`~daprdockr.adapters.docker_queries`: listings and inspections as ``ContainerInfo``;
* :mod:`~daprdockr.adapters.docker_config`: the create body (labels, ports, limits, DNS, binds);
* :mod:`~daprdockr.adapters.docker_lifecycle`: pull, create, start (once listening), restart, remove;
* here: the port the reconciler uses, and draining a container's connections.

Containers are named ``daprdockr.<node>.<service>.<group>.<n>`` and labelled with service, group,
instance, node and the spec's runtime hash (:mod:`daprdockr.core.containers`); only containers
labelled with this node are ever touched.  Only aiodocker's public API is used
(tests/adapters/test_aiodocker_api.py fails when a private attribute is used again).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from daprdockr.adapters.docker_lifecycle import ContainerLifecycle
from daprdockr.adapters.docker_queries import ContainerQueries
from daprdockr.adapters.procs import established_on_ports, established_to, proxied_connections, proxy_pids
from daprdockr.core.containers import ContainerInfo
from daprdockr.core.model import ServiceSpec


class ContainerRuntime(Protocol):
    """The port the reconciler uses; :class:`DockerRuntime` is the real implementation."""

    async def list_managed(self) -> list[ContainerInfo]: ...

    async def start_instance(self, *, spec: ServiceSpec, number: int, beside: bool = False) -> ContainerInfo: ...

    async def inspect(self, container_id: str) -> ContainerInfo | None: ...

    async def restart_instance(self, container: ContainerInfo, *, spec: ServiceSpec) -> ContainerInfo: ...

    async def remove(self, container_id: str, *, grace: float, signal: str | None = None) -> None: ...

    async def drain(self, container: ContainerInfo, *, within: float) -> int: ...


class DockerRuntime(ContainerLifecycle, ContainerQueries):
    """aiodocker-backed :class:`ContainerRuntime` for one node."""

    async def drain(self, container: ContainerInfo, *, within: float) -> int:
        """Wait until no client connection is open to ``container``'s published ports (every
        router already took it out, so these are requests in flight and idle keepalive
        connections, which nginx closes after 2 s), at most ``within`` seconds.  Returns the
        connections still open at the end (0: drained).

        Counted on both sides, and drained when both are 0: inside the container's network
        namespace, on its own ports (a connection that came through Docker's DNAT has no socket on
        the host side; from the host's table on the published ports when the container's cannot
        be read), and in Docker's userland proxy processes for those ports (a proxy holds a
        client's connection before the container sees one: while its SYN to a busy container waits
        to be sent again, for a second)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        if not container.ports:
            return 0
        private = [int(key.partition("/")[0]) for key, _ in container.ports if key.endswith("/tcp")]
        published = [port for _, port in container.ports]
        pid = await self._pid(container.id)
        proxies = await asyncio.to_thread(proxy_pids, self.advertise_ip, published)

        def count() -> int:
            inside = established_on_ports(pid, private) if pid else None
            if inside is None:
                inside = established_to(self.advertise_ip, published)
            return max(inside, proxied_connections(proxies))

        while True:
            open_now = await asyncio.to_thread(count)
            if open_now == 0 or loop.time() >= deadline:
                return open_now
            await asyncio.sleep(0.2)
