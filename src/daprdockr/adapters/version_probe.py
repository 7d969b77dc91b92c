"""Finding the versions of the tools DaprDockr works with, each probe time-limited.

Best effort, for ``daprdockr version``: a tool's command (``etcd --version``, ``nginx -v``) run
with a deadline (its process group is killed when it runs over), the Docker engine asked over
its API socket, the etcd server asked over gRPC.  A probe never raises: what went wrong is its
:class:`~daprdockr.core.versions.Probe` ``problem`` (``not on PATH``, ``timed out after 3s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Coroutine, Sequence

import aiodocker

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.process import kill_group
from daprdockr.cancellation import within
from daprdockr.core.versions import Probe, parse_version

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 3.0
# nginx and dockerd live in sbin, which is not on every user's PATH
EXTRA_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def find_binary(name: str, *, extra_dirs: Sequence[str] | None = None) -> str | None:
    """``name`` on PATH, else in one of ``extra_dirs`` (default :data:`EXTRA_DIRS`)."""
    found = shutil.which(name)
    if found is not None:
        return found
    for d in EXTRA_DIRS if extra_dirs is None else extra_dirs:
        path = os.path.join(d, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


async def command_probe(
    tool: str, argv: Sequence[str], *, limit: float = PROBE_TIMEOUT, extra_dirs: Sequence[str] | None = None,
) -> Probe:
    """Run ``argv`` (stdout and stderr together) and parse ``tool``'s version out of its output."""
    source = " ".join(argv)
    binary = find_binary(argv[0], extra_dirs=extra_dirs)
    if binary is None:
        return Probe(source=source, problem="not on PATH")
    try:
        proc = await asyncio.create_subprocess_exec(
            binary, *argv[1:], stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        return Probe(source=source, problem=f"cannot run: {exc.strerror or exc}")
    try:
        out, _ = await within(proc.communicate(), limit)
    except TimeoutError:
        kill_group(proc.pid)
        with contextlib.suppress(TimeoutError):
            await within(proc.wait(), 1.0)
        return Probe(source=source, problem=f"timed out after {limit:g}s")
    finally:
        if proc.returncode is None:  # cancelled: our child does not outlive us
            kill_group(proc.pid)
    text = out.decode(errors="replace")
    version = parse_version(tool, text)
    if version is None:
        first = text.strip().splitlines()[:1]
        return Probe(source=source, problem=f"exited {proc.returncode}: {first[0][:120] if first else 'no output'}")
    return Probe(source=source, version=version)


async def docker_engine_probe(*, url: str | None = None, limit: float = PROBE_TIMEOUT) -> Probe:
    """The engine's version and API version, asked over its socket (DOCKER_HOST, else the default)."""
    where = url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    source = f"engine at {where}"
    if where.startswith("unix://") and not os.path.exists(where.removeprefix("unix://")):  # noqa: ASYNC240 - one stat
        return Probe(source=source, problem="no such socket")
    try:
        docker = aiodocker.Docker(url=url)
    except Exception as exc:
        return Probe(source=source, problem=_one_line(exc))

    async def ask() -> str:
        info = await docker.version()
        return f"{info.get('Version', '?')} (API {info.get('ApiVersion', '?')})"

    return await _bounded(source, ask(), limit=limit, close=docker.close)


async def docker_command_probe(*, limit: float = PROBE_TIMEOUT) -> Probe:
    """``docker version`` (the CLI, with its own DOCKER_HOST and contexts) when the socket would not say."""
    return await command_probe(
        "docker", ["docker", "version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})"],
        limit=limit)


async def etcd_server_probe(store: EtcdStore, *, limit: float = PROBE_TIMEOUT) -> Probe:
    """The version of the first etcd endpoint of ``store`` that answers."""
    source = "server at " + ",".join(str(e) for e in store.endpoints)
    return await _bounded(source, store.server_version(), limit=limit, close=store.close)


async def _bounded(source: str, version: Coroutine[object, object, str], *, limit: float,
                   close: Callable[[], Awaitable[object]]) -> Probe:
    """``version`` within ``limit`` seconds as a Probe (a timeout or an error as its problem);
    then ``close`` the client it used (bounded, its errors ignored)."""
    try:
        return Probe(source=source, version=await within(version, limit))
    except TimeoutError:
        return Probe(source=source, problem=f"timed out after {limit:g}s")
    except Exception as exc:
        return Probe(source=source, problem=_one_line(exc))
    finally:
        with contextlib.suppress(Exception):
            await within(close(), 1.0)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
