"""Container lifecycle: pull (only when absent), create, start, restart, stop and remove.

* A start returns once the container's program listens on ``http_port`` (read from the
  container's own socket table; at most ``listen_wait`` seconds): nginx routes an instance as
  soon as its record says ``running``, and Docker's userland proxy resets every connection until
  the program listens (a few milliseconds on a busy machine, a second for a program that sleeps
  first: nginx retries each reset, but a request whose every try met one failed).
* The image is pulled with the credentials the host's Docker configuration holds for its registry
  (:mod:`daprdockr.adapters.registry_credentials`); a pull the registry refuses for want of
  (other) credentials is a terminal error naming the registry and whether credentials were found
  for it, never the credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

import aiodocker
import aiohttp
from aiodocker.containers import DockerContainer

from daprdockr.adapters.docker_client import translate
from daprdockr.adapters.docker_config import ContainerConfigs
from daprdockr.adapters.docker_queries import info_from_inspect
from daprdockr.adapters.procs import listening_on
from daprdockr.cancellation import within
from daprdockr.core.containers import LABEL_NODE, ContainerInfo, container_name
from daprdockr.core.model import ServiceSpec
from daprdockr.core.registry_auth import CredentialLookup, is_auth_refusal, qualified_reference, redact, registry_host
from daprdockr.errors import ContainerError, DaprDockrError

log = logging.getLogger(__name__)


class ContainerLifecycle(ContainerConfigs):
    """Starts and removals of this node's containers (a part of
    :class:`~daprdockr.adapters.docker_runtime.DockerRuntime`)."""

    async def ensure_image(self, image: str) -> None:
        try:
            await self._do(self.docker.images.inspect(image), what="inspect image")
            return
        except ContainerError:
            pass
        found = (await self.credentials.lookup(image) if self.credentials is not None else
                 CredentialLookup(host=registry_host(image), credentials=None, source="--docker-config none"))
        creds = found.credentials
        if creds is None:
            log.info("pulling image %s", image)
        else:
            log.info("pulling image %s with the credentials for %s from %s", image, found.host, found.source)
        try:
            await self._do(self.docker.images.pull(qualified_reference(image) if creds else image,
                                                   auth=creds.header() if creds else None), what=f"pull {image}")
        except ContainerError as exc:
            reason = redact(str(exc), creds.secrets() if creds else ())
            if is_auth_refusal(reason):  # the same credentials are refused again: no hot retries
                raise ContainerError(f"image {image} is not available: registry {found.host} refused the pull "
                                     f"({reason}); {found.describe()}", transient=False) from None
            raise ContainerError(f"image {image} is not available: {reason}", transient=True) from None

    async def start_instance(self, *, spec: ServiceSpec, number: int, beside: bool = False) -> ContainerInfo:
        """Create and start the container; returns it with its published host ports.  With
        ``beside`` it gets a name of its own (suffixed with its spec hash), so it can run next to
        the instance's current container (a start-first replacement).

        The happy path is three engine calls (create, start, inspect): the image is checked only
        the first time this runtime uses it (a create answered 404 pulls it and retries), and a
        leftover container of the same name is removed only when create reports the conflict.
        With an ``http_port``, it then waits (:meth:`_await_listening`) until the program listens.
        """
        self.check_binds(spec)
        name = container_name(node_id=self.node_id, service=spec.name, number=number)
        if beside:
            name = f"{name}.{spec.runtime_hash[:12]}"
        if spec.image not in self._images_present:
            await self.ensure_image(spec.image)
            self._images_present.add(spec.image)
        container = await self._create(self.container_config(spec=spec, number=number), name=name)
        try:
            await self._do(container.start(), what=f"start {name}")
        except DaprDockrError:
            await self.remove(container.id, grace=0)
            raise
        return await self._started(container, name=name, spec=spec)

    async def _started(self, container: DockerContainer, *, name: str,
                       spec: ServiceSpec) -> ContainerInfo:
        """A container just started: as Docker shows it, once its program listens on ``http_port``."""
        details = await self._do(container.show(), what=f"inspect {name}")
        info = info_from_inspect(details)
        if info is None or not info.serving:
            raise ContainerError(f"{name} exited right after start", transient=True)
        if spec.http_port is not None:
            await self._await_listening(name, int((details.get("State") or {}).get("Pid") or 0), spec.http_port)
        return info

    async def _await_listening(self, name: str, pid: int, port: int) -> None:
        """Poll the container's socket table until its program listens on ``port``; give up (and
        route it anyway, as every peer does without a readiness check) after ``listen_wait``
        seconds, or at once when the table cannot be read (the program exited: the reconciler's
        crash handling takes it from there)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.listen_wait
        while pid:
            ready = await asyncio.to_thread(listening_on, pid, port)
            if ready is None or ready:
                return
            if loop.time() >= deadline:
                log.warning("%s does not listen on port %d after %.0fs; routing it anyway (a health check "
                            "would keep it out until it answers)", name, port, self.listen_wait)
                return
            await asyncio.sleep(0.01)

    async def _create(self, config: dict[str, Any], *, name: str) -> DockerContainer:
        """``POST /containers/create``, repairing the two expected refusals once: a name still
        taken by an old container of ours (409: removed, or when Docker cannot remove it, the new
        container takes a fresh name beside it) and an image removed since we checked (404)."""
        try:
            return await within(self.docker.containers.create(config, name=name), self.timeout)
        except aiodocker.DockerError as exc:
            if exc.status == 409:
                try:
                    await self._remove_by_name(name)
                except ContainerError as stuck:
                    if not stuck.transient:
                        raise
                    log.warning("the name %s is held by a container Docker cannot remove (%s); using a fresh name",
                                name, stuck)
                name = await self._free_name(name)
            elif exc.status == 404:
                self._images_present.discard(config["Image"])
                await self.ensure_image(config["Image"])
            else:
                raise translate(exc, what=f"create {name}") from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise translate(exc, what=f"create {name}") from exc
        return await self._do(self.docker.containers.create(config, name=name), what=f"create {name}")

    async def _free_name(self, name: str) -> str:
        """``name`` if nothing holds it now, else ``<name>.<6 hex digits>`` (a removal under way or
        stuck: a new container never waits behind an old one)."""
        try:
            await self.docker.containers.get(name)
        except aiodocker.DockerError:
            return name
        except (aiohttp.ClientError, OSError) as exc:
            raise translate(exc, what="get") from exc
        return f"{name}.{secrets.token_hex(3)}"

    async def restart_instance(self, container: ContainerInfo, *, spec: ServiceSpec) -> ContainerInfo:
        """Start our stopped ``container`` again as it is (``docker start``: after the engine or
        the host restarted, the container is still the spec's); returns it with its (new) published
        ports once its program listens, as :meth:`start_instance` does.  A task containerd still
        holds from before (``task ... already exists``) is a terminal refusal: the caller replaces it."""
        c = self.docker.containers.container(container.id)
        try:
            await self._do(c.start(), what=f"start {container.id[:12]}")
        except ContainerError as exc:
            if "already exists" in str(exc):  # containerd kept the task of an engine that went away
                raise ContainerError(f"{exc} (it cannot be started again)", transient=False) from exc
            raise
        return await self._started(c, name=container.id[:12], spec=spec)

    async def _remove_by_name(self, name: str) -> None:
        try:
            old = await self.docker.containers.get(name)
        except aiodocker.DockerError:
            return
        except (aiohttp.ClientError, OSError) as exc:
            raise translate(exc, what="get") from exc
        labels = old["Config"].get("Labels") or {}
        if labels.get(LABEL_NODE) != self.node_id:
            raise ContainerError(f"container {name} exists and is not ours", transient=False)
        await self.remove(old.id, grace=0)

    async def restart_container(
        self, container: ContainerInfo, *, spec: ServiceSpec, grace: float, signal: str | None = None
    ) -> ContainerInfo:
        """Restart our running ``container`` in place (an operator's restart): stop it as a removal
        does (``signal``, SIGKILL after ``grace`` seconds), then start the same container again
        (same id, a new ``State.StartedAt``) as :meth:`restart_instance` does."""
        c = self.docker.containers.container(container.id)
        await self._stop(c, grace=max(grace, 1.0), signal=signal)
        if signal is not None:  # (still running after its grace: killed, as docker stop would)
            with contextlib.suppress(ContainerError):
                await self._do(c.kill(signal="SIGKILL"), what="kill")
        return await self.restart_instance(container, spec=spec)

    async def _stop(self, c: DockerContainer, *, grace: float, signal: str | None) -> None:
        """Stop (``signal``, default the image's stop signal; SIGKILL after ``grace`` seconds)."""
        try:
            if grace > 0 and signal is None:
                await self._do(c.stop(t=max(1, round(grace))), what="stop")
            elif grace > 0:
                await self._do(c.kill(signal=signal), what=f"kill -{signal}")
                with contextlib.suppress(DaprDockrError):
                    await within(self._do(c.wait(), what="wait"), grace)
        except ContainerError as exc:
            log.debug("stop %s: %s", c.id[:12], exc)

    async def remove(self, container_id: str, *, grace: float, signal: str | None = None) -> None:
        """Stop (``signal``, default the image's stop signal; SIGKILL after ``grace`` seconds) and
        delete; absent is fine."""
        c = self.docker.containers.container(container_id)
        await self._stop(c, grace=grace, signal=signal)
        try:
            await self._do(c.delete(force=True), what="remove")
        except ContainerError as exc:
            if "No such container" not in str(exc) and "is already in progress" not in str(exc):
                raise
