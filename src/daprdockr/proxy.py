"""The agent's own nginx: a supervised child process with validated, graceful reloads.

* nginx runs in the foreground (``daemon off``) in its own process group, with its config,
  pid file, logs and temp dirs under ``state_dir``.  If the master dies, the group is killed
  (no orphaned workers holding the port) and nginx is started again after the delay chosen by
  the pure :class:`~daprdockr.core.restart_policy.RestartPolicy`; the agent stays up.
* :meth:`NginxManager.update` only records the newest state and marks the manager dirty; the
  run loop reloads ``debounce`` after a change, so bursts of etcd events coalesce into one
  reload, and a pure :class:`~daprdockr.core.ratelimit.TokenBucket` bounds the rate: up to
  ``reload_burst`` reloads back to back (a scale-up's few steps reach nginx at once), then one
  per ``min_interval`` under sustained churn.
* A reload renders the config (pure), skips it if unchanged, writes it to a temp file, runs
  ``nginx -t`` on it, atomically renames it over the live file and sends SIGHUP (graceful: old
  workers finish their requests, ``worker_shutdown_timeout`` bounds them).  If the test fails,
  each service is tested alone to find the offending ones; if none fails alone (services that
  fail only together), they are added one at a time and each one that breaks the growing config
  is left out.  Left-out services are reported in :attr:`service_errors`; the last good config
  keeps running if even that fails.
* Files: the manager's directory is private (0700, refused if another user could tamper with it,
  :mod:`daprdockr.adapters.statedir`); every file is written without following symlinks and
  renamed into place.  Run as root, nginx's workers run as ``www-data`` (else ``nobody``); they
  never touch the disk (see :mod:`daprdockr.core.nginx_render`).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from daprdockr.adapters.procs import nginx_group_members, stale_nginx_group
from daprdockr.adapters.statedir import prepare_state_dir, write_private
from daprdockr.core.names import ServiceName
from daprdockr.core.nginx_render import NginxPaths, Rendered, render_nginx_conf
from daprdockr.core.ratelimit import TokenBucket
from daprdockr.core.restart_policy import RestartPolicy, RestartState
from daprdockr.core.state import ClusterState
from daprdockr.errors import DaprDockrError, ProxyError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class NginxStats:
    reloads: int = 0
    reload_failures: int = 0
    restarts: int = 0


def worker_user() -> tuple[str, str] | None:
    """The user and group nginx workers run as: unprivileged when the agent is root."""
    if os.geteuid() != 0:
        return None  # nginx cannot switch users; workers run as we do
    for name in ("www-data", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return name, grp.getgrgid(entry.pw_gid).gr_name
    return None


class NginxManager:
    name = "nginx"

    def __init__(
        self,
        *,
        state_dir: Path,
        listen: tuple[str, int],
        binary: str = "nginx",
        debounce: float = 0.05,
        min_interval: float = 1.0,
        reload_burst: int = 6,
        restart_policy: RestartPolicy | None = None,
        workers: int = 2,
    ) -> None:
        self.state_dir = Path(os.path.abspath(state_dir))
        self.listen = listen
        self.binary = binary
        self.debounce = debounce
        self.min_interval = min_interval
        self._bucket = TokenBucket(burst=reload_burst, interval=min_interval)
        self.policy = restart_policy or RestartPolicy()
        self.workers = workers
        self.paths = NginxPaths(root=str(self.state_dir))
        self.conf = self.state_dir / "nginx.conf"
        self.stats = NginxStats()
        self.service_errors: Mapping[ServiceName, str] = {}
        self.last_error = ""
        self._state = ClusterState()
        self._dirty = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._restart = RestartState()
        self._current = ""

    # ------------------------------------------------------------------ status
    @property
    def healthy(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Write and test the initial config, then start the master; ProxyError if impossible."""
        try:
            prepare_state_dir(self.state_dir)
            (self.state_dir / "tmp").mkdir(mode=0o700, exist_ok=True)
        except DaprDockrError as exc:
            raise ProxyError(str(exc)) from exc
        rendered = self._render(skip=frozenset())
        error = await self._test(rendered.text)
        if error:
            raise ProxyError(f"nginx rejects the base configuration: {error}")
        self._write_atomic(self.conf, rendered.text)
        self._current = rendered.text
        await self._kill_stale_master()
        await self._spawn()

    async def _kill_stale_master(self) -> None:
        """Kill an nginx left running by a previous agent that died without stopping it
        (SIGKILL): its master and workers, or its orphaned workers, still hold the port."""
        pgid = stale_nginx_group(Path(self.paths.pid), self.conf)
        if pgid is None:
            return
        log.warning("killing nginx process group %d left behind by a previous agent", pgid)
        self._kill_group(pgid)
        for _ in range(50):  # zombies may stay (an init that does not reap); they hold no port
            if not nginx_group_members(pgid):
                return
            await asyncio.sleep(0.05)

    async def _spawn(self) -> None:
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self.binary, "-p", str(self.state_dir), "-c", str(self.conf),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, start_new_session=True,
            )
        except OSError as exc:
            raise ProxyError(f"cannot start {self.binary}: {exc}") from exc
        self._restart = self.policy.on_start(self._restart, now=time.monotonic())
        # nginx fails fast (bad listen address, port in use): give it a moment to say so
        try:
            await asyncio.wait_for(asyncio.shield(self._proc.wait()), 0.3)
        except TimeoutError:
            log.info("nginx master %d serving on %s:%d", self._proc.pid, *self.listen)
            return
        err = await self._proc.stderr.read() if self._proc.stderr else b""
        raise ProxyError(f"nginx exited at start: {err.decode(errors='replace').strip()[-500:]}")

    async def stop(self, *, grace: float = 5.0) -> None:
        """Graceful quit (SIGQUIT), then SIGKILL of the whole group after ``grace`` seconds."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGQUIT)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            log.warning("nginx did not quit within %.0fs; killing it", grace)
        self._kill_group(proc.pid)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 2)

    def kill(self) -> None:
        """SIGKILL nginx's whole process group now (the agent is exiting without a clean stop)."""
        if self._proc is not None:
            self._kill_group(self._proc.pid)

    @staticmethod
    def _kill_group(pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)

    # ------------------------------------------------------------------ updates
    def update(self, state: ClusterState) -> None:
        self._state = state
        self._dirty.set()

    def _render(self, *, skip: frozenset[ServiceName], only: frozenset[ServiceName] | None = None) -> Rendered:
        return render_nginx_conf(
            self._state, listen=self.listen, paths=self.paths, worker_user=worker_user(),
            workers=self.workers, skip=skip, only=only,
        )

    async def _test(self, text: str) -> str:
        """``nginx -t`` on ``text`` in a temp file; returns the error text, or "" if valid."""
        tmp = self.state_dir / f"nginx.test.{os.getpid()}.conf"
        write_private(tmp, text)
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary, "-t", "-q", "-p", str(self.state_dir), "-c", str(tmp),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )
            _, err = await proc.communicate()
        except OSError as exc:
            return f"cannot run {self.binary}: {exc}"
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return "" if proc.returncode == 0 else err.decode(errors="replace").strip()

    @staticmethod
    def _write_atomic(path: Path, text: str) -> None:
        write_private(path, text, mode=0o644)

    async def reload_once(self) -> bool:
        """Render, test, swap and SIGHUP; True if nginx got a new config."""
        rendered = self._render(skip=frozenset())
        errors = dict(rendered.errors)
        if rendered.text == self._current:
            self.service_errors = errors
            return False
        problem = await self._test(rendered.text)
        if problem:
            bad = await self._find_bad(rendered.services)
            rendered = self._render(skip=frozenset(bad))
            errors.update(bad)
            problem = await self._test(rendered.text)
            if problem:
                self.stats.reload_failures += 1
                self.last_error = problem
                self.service_errors = errors
                log.error("nginx config rejected, keeping the last good one: %s", problem)
                return False
            for name, reason in bad.items():
                log.error("service %s left out of nginx: %s", name, reason)
        self.service_errors = errors
        if rendered.text == self._current:
            return False
        self._write_atomic(self.conf, rendered.text)
        self._current = rendered.text
        if self.healthy and self._proc is not None:
            self._proc.send_signal(signal.SIGHUP)
        self._bucket = self._bucket.take(now=time.monotonic())
        self.stats.reloads += 1
        self.last_error = ""
        log.info("nginx reloaded (%d routed services)", len(rendered.services))
        return True

    async def _find_bad(self, services: tuple[ServiceName, ...]) -> dict[ServiceName, str]:
        """The services to leave out so that the rest passes ``nginx -t``."""
        bad: dict[ServiceName, str] = {}
        for name in services:
            err = await self._test(self._render(skip=frozenset(), only=frozenset({name})).text)
            if err:
                bad[name] = f"nginx -t failed: {err.splitlines()[-1]}"
        if bad:
            return bad
        # every service passes alone: some fail only together; grow the config one at a time
        kept: set[ServiceName] = set()
        for name in services:
            err = await self._test(self._render(skip=frozenset(), only=frozenset({*kept, name})).text)
            if err:
                bad[name] = f"nginx -t failed together with other services: {err.splitlines()[-1]}"
            else:
                kept.add(name)
        return bad

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        """Forever: apply updates (debounced, rate-limited) and keep nginx alive."""
        while True:
            proc = self._proc
            if proc is None or proc.returncode is not None:
                await self._restart_after_exit()
                continue
            exit_wait = asyncio.ensure_future(proc.wait())
            dirty_wait = asyncio.ensure_future(self._dirty.wait())
            try:
                await asyncio.wait({exit_wait, dirty_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                dirty_wait.cancel()
                if not exit_wait.done():
                    exit_wait.cancel()
            if self._dirty.is_set():
                await self._apply_pending()

    async def _apply_pending(self) -> None:
        wait = max(self.debounce, self._bucket.delay(now=time.monotonic()))
        await asyncio.sleep(wait)
        self._dirty.clear()
        try:
            await self.reload_once()
        except OSError as exc:
            self.stats.reload_failures += 1
            self.last_error = str(exc)
            log.error("nginx reload failed: %s", exc)

    async def _restart_after_exit(self) -> None:
        old = self._proc
        code = old.returncode if old is not None else None
        if old is not None:
            self._kill_group(old.pid)  # orphaned workers must not keep the port
        self._restart, delay = self.policy.on_exit(self._restart, now=time.monotonic())
        log.error("nginx exited (code %s); restarting in %.1fs", code, delay)
        await asyncio.sleep(delay)
        self.stats.restarts += 1
        try:
            self._current = ""
            await self.reload_once()
            await self._spawn()
        except ProxyError as exc:
            self.last_error = str(exc)
            log.error("nginx restart failed: %s", exc)
            self._proc = None
