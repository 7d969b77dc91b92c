"""The Docker engine connection (aiodocker): two clients (the reconciler's, and one of its own for
long log streams), every call bounded by ``timeout``, aiodocker/aiohttp errors translated into
:class:`~daprdockr.errors.ContainerError` (terminal for a missing image or bad config, transient
otherwise) or :class:`~daprdockr.errors.RuntimeUnavailableError` (engine down); and the engine's
event stream for this node's containers."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Protocol, TypeVar

import aiodocker
import aiohttp

from daprdockr.cancellation import owner_cancelled, within
from daprdockr.core.containers import LABEL_NODE
from daprdockr.core.registry_auth import CredentialLookup
from daprdockr.errors import ContainerError, DaprDockrError, RuntimeUnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")


class CredentialSource(Protocol):
    """Registry credentials for a pull (:class:`~daprdockr.adapters.registry_credentials.DockerCredentials`)."""

    async def lookup(self, image: str) -> CredentialLookup: ...


def translate(exc: BaseException, *, what: str) -> DaprDockrError:
    """Map an aiodocker/aiohttp/OS exception to the project's error types."""
    if isinstance(exc, DaprDockrError):
        return exc
    if isinstance(exc, aiodocker.DockerError):
        status = int(getattr(exc, "status", 0) or 0)
        msg = getattr(exc, "message", str(exc))
        if status >= 900 or "Cannot connect to Docker" in str(msg):
            return RuntimeUnavailableError(f"docker {what}: engine unreachable ({msg})")
        if status in (400, 404, 409):
            return ContainerError(f"docker {what}: {msg}", transient=status == 409)
        return ContainerError(f"docker {what}: {msg}", transient=True)
    if isinstance(exc, aiohttp.ClientError | OSError | asyncio.TimeoutError):
        return RuntimeUnavailableError(f"docker {what}: engine unreachable ({exc})")
    return ContainerError(f"docker {what}: {exc}", transient=True)


class DockerEngine:
    """The clients and settings of :class:`~daprdockr.adapters.docker_runtime.DockerRuntime` (its base)."""

    def __init__(
        self, *, node_id: str, advertise_ip: str, url: str | None = None, timeout: float = 30.0,
        dns_server: str | None = None, allow_bind: tuple[str, ...] = (), listen_wait: float = 10.0,
        credentials: CredentialSource | None = None,
    ) -> None:
        self.credentials = credentials  # None: pulls go without credentials
        self.node_id = node_id
        self.listen_wait = listen_wait  # how long a start waits for the program to listen on http_port
        self.advertise_ip = advertise_ip
        self.dns_server = dns_server  # the agent's DNS (port 53), given to containers that can reach it
        self.allow_bind = tuple(os.path.realpath(p) for p in allow_bind)  # host paths bind mounts may use
        self.url = url
        self.timeout = timeout
        self._docker: aiodocker.Docker | None = None
        self._logs_docker: aiodocker.Docker | None = None  # log streams never take the main pool
        self._images_present: set[str] = set()

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = aiodocker.Docker(url=self.url)
        return self._docker

    @property
    def logs_docker(self) -> aiodocker.Docker:
        """A client (connection pool) of its own for container logs: long ``follow`` streams must
        never hold the connections the reconciler needs."""
        if self._logs_docker is None:
            self._logs_docker = aiodocker.Docker(url=self.url)
        return self._logs_docker

    async def close(self) -> None:
        for client in (self._docker, self._logs_docker):
            if client is not None:
                await client.close()
        self._docker = self._logs_docker = None

    async def _do(self, coro: Awaitable[T], *, what: str) -> T:
        try:
            return await within(coro, self.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate(exc, what=what) from exc

    async def ping(self) -> None:
        await self._do(self.docker.version(), what="ping")

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Container events for this node's containers until the stream ends or fails: aiodocker's
        event channel, fed by a task of our own (aiodocker's own would outlive the stream)."""
        events = self.docker.events
        if events.json_stream is not None:  # (aiodocker's run() would return at once, publishing nothing)
            raise ContainerError("docker events: this client's event stream is already open", transient=True)
        subscriber = events.subscribe(create_task=False)  # type: ignore[no-untyped-call]  # (aiodocker: unannotated)
        filters = {"type": ["container"], "label": [f"{LABEL_NODE}={self.node_id}"]}
        feed = asyncio.ensure_future(events.run(filters=filters))
        try:
            while (event := await subscriber.get()) is not None:
                yield event
            await feed  # (the error the stream ended with, if any)
        except asyncio.CancelledError:
            if owner_cancelled():
                raise
            raise RuntimeUnavailableError("docker events: the stream was cancelled under us") from None
        except (aiodocker.DockerError, aiohttp.ClientError, OSError, ValueError) as exc:
            raise translate(exc, what="events") from exc
        finally:
            if not feed.done():
                feed.cancel()
                await asyncio.gather(feed, return_exceptions=True)
