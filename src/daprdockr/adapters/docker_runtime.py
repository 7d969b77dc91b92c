"""Docker adapter (aiodocker): run, list, stop and watch this node's labelled containers.

* Containers are named ``daprdockr.<node>.<service>.<group>.<n>`` and labelled with service,
  group, instance, node and the spec's runtime hash (:mod:`daprdockr.core.containers`).  Every
  query filters on ``daprdockr.node=<this node>``, so several agents can share one engine and
  none touches another's containers, nor any unlabelled container.
* Ports (``http_port`` and the extra ``ports``) are published on the agent's advertise address
  with host-assigned ports; the real host ports come back in :class:`ContainerInfo`.  Every
  container runs with ``no-new-privileges``; user labels never use the reserved namespaces
  (``daprdockr.``, ``com.docker.``, ``io.docker.``, ``org.dockerproject.``: refused at validation).
* A start returns once the container's program listens on ``http_port`` (read from the
  container's own socket table; at most ``listen_wait`` seconds): nginx routes an instance as
  soon as its record says ``running``, and Docker's userland proxy resets every connection until
  the program listens (a few milliseconds on a busy machine, a second for a program that sleeps
  first: nginx retries each reset, but a request whose every try met one failed).
* The image is pulled only when absent, with the credentials the host's Docker configuration
  holds for its registry (:mod:`daprdockr.adapters.registry_credentials`); a pull the registry
  refuses for want of (other) credentials is a terminal error naming the registry and whether
  credentials were found for it, never the credentials.  aiodocker/aiohttp errors become
  :class:`~daprdockr.errors.ContainerError` (terminal for a missing image or bad config,
  transient otherwise) or :class:`~daprdockr.errors.RuntimeUnavailableError` (engine down).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, Protocol, TypeVar

import aiodocker
import aiohttp

from daprdockr.adapters.procs import (
    established_on_ports,
    established_to,
    listening_on,
    proxied_connections,
    proxy_pids,
)
from daprdockr.cancellation import within
from daprdockr.core.containers import (
    LABEL_GROUP,
    LABEL_INSTANCE,
    LABEL_NODE,
    LABEL_SERVICE,
    LABEL_SPEC_HASH,
    ContainerInfo,
    container_labels,
    container_name,
)
from daprdockr.core.containerspec import default_hostname
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.registry_auth import CredentialLookup, is_auth_refusal, qualified_reference, redact, registry_host
from daprdockr.errors import ContainerError, DaprDockrError, RuntimeUnavailableError, ValidationError

log = logging.getLogger(__name__)
T = TypeVar("T")


class ContainerRuntime(Protocol):
    """The port the reconciler uses; :class:`DockerRuntime` is the real implementation."""

    async def list_managed(self) -> list[ContainerInfo]: ...

    async def start_instance(self, *, spec: ServiceSpec, number: int, beside: bool = False) -> ContainerInfo: ...

    async def inspect(self, container_id: str) -> ContainerInfo | None: ...

    async def restart_instance(self, container: ContainerInfo, *, spec: ServiceSpec) -> ContainerInfo: ...

    async def remove(self, container_id: str, *, grace: float, signal: str | None = None) -> None: ...

    async def drain(self, container: ContainerInfo, *, within: float) -> int: ...


class CredentialSource(Protocol):
    """Registry credentials for a pull (:class:`~daprdockr.adapters.registry_credentials.DockerCredentials`)."""

    async def lookup(self, image: str) -> CredentialLookup: ...


def _translate(exc: BaseException, *, what: str) -> DaprDockrError:
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


def info_from_inspect(data: dict[str, Any]) -> ContainerInfo | None:
    """ContainerInfo from a ``GET /containers/<id>/json`` body (one call right after start)."""
    ports = [
        {"PrivatePort": int(key.split("/")[0]), "Type": key.split("/")[1], "PublicPort": int(b["HostPort"])}
        for key, bindings in ((data.get("NetworkSettings") or {}).get("Ports") or {}).items()
        for b in bindings or []
        if b.get("HostPort")
    ]
    state = data.get("State") or {}
    return info_from_summary(
        {
            "Id": data.get("Id", ""),
            "Labels": (data.get("Config") or {}).get("Labels") or {},
            "Ports": ports,
            "State": "paused" if state.get("Paused") else "running" if state.get("Running")
            else "dead" if state.get("Dead") else str(state.get("Status", "")),
        }
    )


class DockerRuntime:
    """aiodocker-backed :class:`ContainerRuntime` for one node."""

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
            raise _translate(exc, what=what) from exc

    async def ping(self) -> None:
        await self._do(self.docker.version(), what="ping")

    def _label_filter(self) -> str:
        return json.dumps({"label": [f"{LABEL_NODE}={self.node_id}"]})

    async def list_managed(self) -> list[ContainerInfo]:
        """This node's labelled containers, running or not."""
        data = await self._do(
            self.docker._query_json(
                "containers/json", params={"all": "1", "filters": self._label_filter()}
            ),
            what="list",
        )
        result = []
        for item in data:
            info = info_from_summary(item)
            if info is None:
                log.warning("ignoring container %s with malformed daprdockr labels", item.get("Id"))
            elif info.node == self.node_id:
                result.append(info)
        return result

    async def container_networks(self) -> list[str]:
        """Subnets (CIDR) of the network this node's containers attach to (Docker's ``bridge``)."""
        data = await self._do(self.docker._query_json("networks/bridge"), what="inspect network bridge")
        return [str(c["Subnet"]) for c in ((data.get("IPAM") or {}).get("Config") or []) if c.get("Subnet")]

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

    def container_dns(self, spec: ServiceSpec) -> list[str]:
        """The agent's DNS for the container's resolv.conf, when the container can reach it: from
        the host network any address, from a bridge network not a loopback one (that would be the
        container's own loopback, and it would resolve nothing)."""
        if self.dns_server is None or spec.container.network == "none":
            return []
        if ipaddress.ip_address(self.dns_server).is_loopback and spec.container.network != "host":
            return []
        return [self.dns_server]

    def check_binds(self, spec: ServiceSpec) -> None:
        """A bind mount's host path must lie under one of this agent's ``--allow-bind`` paths
        (symbolic links resolved); else a terminal ContainerError naming the rule."""
        for volume in spec.container.binds():
            real = os.path.realpath(volume.source)
            if not any(real == allowed or real.startswith(allowed.rstrip("/") + "/") for allowed in self.allow_bind):
                rule = ", ".join(self.allow_bind) if self.allow_bind else "none"
                raise ContainerError(
                    f"bind mount of host path {volume.source} is not allowed on node {self.node_id} "
                    f"(its --allow-bind paths: {rule})", transient=False)

    def container_config(self, *, spec: ServiceSpec, number: int) -> dict[str, Any]:
        """The ``POST /containers/create`` body for instance ``number`` of ``spec``."""
        ports = [str(p) for p in spec.container_ports()]
        opts = spec.container
        host_config: dict[str, Any] = {
            "PortBindings": {p: [{"HostIp": self.advertise_ip, "HostPort": ""}] for p in ports},
            "RestartPolicy": {"Name": "no"},
            "Init": True,
            "SecurityOpt": ["no-new-privileges"],  # setuid binaries cannot raise privileges
            "NetworkMode": opts.network,
            "Mounts": [{"Type": v.kind, "Source": v.source, "Target": v.target, "ReadOnly": v.read_only}
                       for v in opts.volumes if v.kind != "anonymous"],
        }
        if dns := self.container_dns(spec):
            host_config["Dns"] = dns
        for key, value in (("Memory", opts.memory), ("NanoCpus", int(opts.cpus * 1e9)),
                           ("CpuShares", opts.cpu_shares), ("PidsLimit", opts.pids_limit)):
            if value:
                host_config[key] = value
        config: dict[str, Any] = {
            "Image": spec.image,
            "Env": [f"{k}={v}" for k, v in spec.env]
            + [
                f"DAPRDOCKR_SERVICE={spec.name}",
                f"DAPRDOCKR_INSTANCE={number}",
                f"DAPRDOCKR_NODE={self.node_id}",
            ],
            "Labels": {
                **dict(spec.labels),
                **container_labels(node_id=self.node_id, service=spec.name, number=number,
                                   spec_hash=spec.runtime_hash),
            },
            "ExposedPorts": {p: {} for p in ports},
            "Hostname": opts.hostname or default_hostname(number=number, service=spec.name.service,
                                                          group=spec.name.group),
            "HostConfig": host_config,
        }
        if spec.cmd:
            config["Cmd"] = list(spec.cmd)
        if opts.entrypoint is not None:
            config["Entrypoint"] = list(opts.entrypoint)
        if opts.user:
            config["User"] = opts.user
        if opts.workdir:
            config["WorkingDir"] = opts.workdir
        if anonymous := [v.target for v in opts.volumes if v.kind == "anonymous"]:
            config["Volumes"] = {t: {} for t in anonymous}
        return config

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

    async def _started(self, container: aiodocker.containers.DockerContainer, *, name: str,
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

    async def _create(self, config: dict[str, Any], *, name: str) -> aiodocker.containers.DockerContainer:
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
                raise _translate(exc, what=f"create {name}") from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _translate(exc, what=f"create {name}") from exc
        return await self._do(self.docker.containers.create(config, name=name), what=f"create {name}")

    async def _free_name(self, name: str) -> str:
        """``name`` if nothing holds it now, else ``<name>.<6 hex digits>`` (a removal under way or
        stuck: a new container never waits behind an old one)."""
        try:
            await self.docker.containers.get(name)
        except aiodocker.DockerError:
            return name
        except (aiohttp.ClientError, OSError) as exc:
            raise _translate(exc, what="get") from exc
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
            raise _translate(exc, what="get") from exc
        labels = old["Config"].get("Labels") or {}
        if labels.get(LABEL_NODE) != self.node_id:
            raise ContainerError(f"container {name} exists and is not ours", transient=False)
        await self.remove(old.id, grace=0)

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

    async def _pid(self, container_id: str) -> int:
        """The container's main process id (0: not running, or gone)."""
        try:
            data = await self._do(self.docker.containers.container(container_id).show(), what="inspect")
        except ContainerError:
            return 0
        return int((data.get("State") or {}).get("Pid") or 0)

    async def remove(self, container_id: str, *, grace: float, signal: str | None = None) -> None:
        """Stop (``signal``, default the image's stop signal; SIGKILL after ``grace`` seconds) and
        delete; absent is fine."""
        c = self.docker.containers.container(container_id)
        try:
            if grace > 0 and signal is None:
                await self._do(c.stop(t=max(1, round(grace))), what="stop")
            elif grace > 0:
                await self._do(c.kill(signal=signal), what=f"kill -{signal}")
                with contextlib.suppress(DaprDockrError):
                    await within(self._do(c.wait(), what="wait"), grace)
        except ContainerError as exc:
            log.debug("stop %s: %s", container_id[:12], exc)
        try:
            await self._do(c.delete(force=True), what="remove")
        except ContainerError as exc:
            if "No such container" not in str(exc) and "is already in progress" not in str(exc):
                raise

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
        filters = json.dumps({"label": [f"{LABEL_NODE}={self.node_id}", f"{LABEL_SERVICE}={service.service}",
                                        f"{LABEL_GROUP}={service.group}", f"{LABEL_INSTANCE}={number}"]})
        data = await self._do(
            self.logs_docker._query_json("containers/json", params={"all": "1", "filters": filters}), what="list")
        found = [i for i in map(info_from_summary, data) if i is not None and i.node == self.node_id
                 and i.key == (service, number)]
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
            raise _translate(exc, what="logs") from exc

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Container events for this node's containers until the stream ends or fails."""
        params = {
            "filters": json.dumps(
                {"type": ["container"], "label": [f"{LABEL_NODE}={self.node_id}"]}
            )
        }
        try:
            forever = self.docker._resolve_long_running_timeout(None)
            async with self.docker._query("events", method="GET", params=params, timeout=forever) as resp:
                async for raw in resp.content:
                    line = raw.strip()
                    if not line:
                        continue
                    try:
                        yield json.loads(line)
                    except ValueError:
                        log.debug("undecodable docker event %r", line[:200])
        except (aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
            raise _translate(exc, what="events") from exc
