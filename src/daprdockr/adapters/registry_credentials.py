"""Registry credentials for image pulls, from the host's Docker client configuration.

:class:`DockerCredentials` reads ``--docker-config`` (default ``$DOCKER_CONFIG/config.json``,
else ``~/.docker/config.json``) again whenever the file changed (its mtime, size or inode), so
a ``docker login`` on the host counts from the next pull on; an absent file means no
credentials, an unusable one is logged once and means none.  A registry served by a credential
helper (``credHelpers``, ``credsStore``) is asked of ``docker-credential-<helper> get`` (the
server URL on stdin, ``{"Username", "Secret"}`` out) at each pull, as Docker's client does; a
helper that is missing, fails or answers nonsense is a terminal
:class:`~daprdockr.errors.ContainerError` naming the helper and the registry, never its output's
secrets.  The parsing and matching are pure: :mod:`daprdockr.core.registry_auth`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path

from daprdockr.cancellation import within
from daprdockr.core.registry_auth import (
    CredentialLookup,
    DockerConfig,
    HelperLookup,
    RegistryCredentials,
    helper_credentials,
    parse_docker_config,
    registry_host,
)
from daprdockr.errors import ContainerError, ValidationError

log = logging.getLogger(__name__)
_FileKey = tuple[int, int, int, int]


def default_docker_config(environ: Mapping[str, str] | None = None) -> Path:
    """``$DOCKER_CONFIG/config.json``, else the running user's ``~/.docker/config.json``."""
    base = (os.environ if environ is None else environ).get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _said(output: bytes) -> str:
    """A failed helper's message for an error: its first line, bounded; nothing that looks
    like its JSON answer (which would hold the secret)."""
    text = output.decode(errors="replace").strip()
    if not text:
        return "no message"
    if text.startswith("{") or "secret" in text.lower():
        return "its output is not shown"
    line = text.splitlines()[0]
    return "".join(c if c.isprintable() else "?" for c in line)[:200]


class DockerCredentials:
    """The credentials of one Docker client configuration file, kept fresh by its mtime."""

    def __init__(self, *, path: Path, helper_timeout: float = 10.0) -> None:
        self.path = path
        self.helper_timeout = helper_timeout
        self._seen: _FileKey | None = None
        self._config: DockerConfig | None = None
        self._problem = f"{path} does not exist"

    def current(self) -> tuple[DockerConfig | None, str]:
        """The file's configuration (None: absent or unusable) and, without one, why."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._seen, self._config, self._problem = None, None, f"{self.path} does not exist"
            return None, self._problem
        except OSError as exc:
            return None, f"{self.path} cannot be read ({exc.strerror})"
        key = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
        if key != self._seen:
            self._seen = key
            try:
                self._config = parse_docker_config(self.path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValidationError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)
                self._config, self._problem = None, f"{self.path} is unusable: {reason}"
                log.warning("docker config %s; pulls go without credentials until it is fixed", self._problem)
            else:
                c = self._config
                log.info("registry credentials from %s: %d logins (%s), %d credential helpers%s", self.path,
                         len(c.auths), ", ".join(sorted(c.auths)) or "none", len(c.cred_helpers),
                         f", credsStore {c.creds_store}" if c.creds_store else "")
        return self._config, self._problem

    async def lookup(self, image: str) -> CredentialLookup:
        """The credentials for pulling ``image`` (by its registry host), and where they came from."""
        host = registry_host(image)
        config, problem = self.current()
        if config is None:
            return CredentialLookup(host=host, credentials=None, source=problem)
        found = config.lookup(host)
        if isinstance(found, HelperLookup):
            creds = await self._ask(found, host=host)
            return CredentialLookup(host=host, credentials=creds, source=f"credential helper {found.program}"
                                    + ("" if creds else " (it has none)"))
        return CredentialLookup(host=host, credentials=found,
                                source=f"auths of {self.path}" if found else f"no entry in {self.path}")

    async def _ask(self, helper: HelperLookup, *, host: str) -> RegistryCredentials | None:
        what = f"credential helper {helper.program} for registry {host}"
        try:
            proc = await asyncio.create_subprocess_exec(
                helper.program, "get", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except FileNotFoundError:
            raise ContainerError(f"{what} is not installed (not found on PATH)", transient=False) from None
        except OSError as exc:
            raise ContainerError(f"{what} cannot run ({exc.strerror})", transient=False) from None
        try:
            out, err = await within(proc.communicate(helper.server.encode()), self.helper_timeout)
        except TimeoutError:
            raise ContainerError(f"{what} did not answer within {self.helper_timeout:g}s", transient=False) from None
        finally:
            if proc.returncode is None:  # (its whole group: a child holding the pipes would block the wait)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if proc.returncode != 0:
            if b"credentials not found" in (out + err).lower():
                return None  # the helper holds nothing for this registry: pull anonymously, as Docker does
            raise ContainerError(f"{what} failed (exit {proc.returncode}): {_said(out or err)}", transient=False)
        try:
            return helper_credentials(out.decode(errors="replace"), server=helper.server)
        except ValidationError as exc:
            raise ContainerError(f"{what}: {exc}", transient=False) from None
