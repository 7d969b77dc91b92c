"""The agent's nginx master as a process: test a configuration, adopt, spawn, stop, kill.

:class:`NginxProcess` owns the master (:class:`~daprdockr.adapters.nginx_master.Master`, or an
:class:`~daprdockr.adapters.nginx_master.AdoptedMaster` a previous agent left running) and its
files under ``state_dir``; what nginx routes is :class:`~daprdockr.proxy.NginxManager`'s.

* :meth:`adopt` takes over the master a previous agent of this node left running, if it runs
  exactly the configuration given and answers on its control socket.
* :meth:`spawn` writes nothing: it starts ``nginx -c nginx.conf`` in the foreground in a process
  group of its own and returns once the control socket accepts (nginx listens before it serves);
  :meth:`kill_stale_master` first ends a group it could not adopt (its workers hold the port).
* :meth:`stop` is a graceful quit (SIGQUIT), then SIGKILL of the whole group; with
  ``leave_running`` nginx keeps serving for the next agent to adopt.
* :meth:`guard` starts the orphan guard (:mod:`daprdockr.adapters.nginx_master`): a master nobody
  adopts quits ``orphan_timeout`` seconds after the last agent's heartbeat (:meth:`beat`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from daprdockr.adapters.nginx_master import AdoptedMaster, Master, alive, beat, start_orphan_guard
from daprdockr.adapters.nginx_setup import control_accepts
from daprdockr.adapters.process import kill_group
from daprdockr.adapters.procs import nginx_group_members, stale_nginx_group
from daprdockr.adapters.statedir import write_private
from daprdockr.cancellation import within
from daprdockr.core.nginx_render import NginxPaths
from daprdockr.errors import ProxyError

log = logging.getLogger(__name__)
START_TIMEOUT = 5.0  # for the control socket of a new master to accept


class NginxProcess:
    """One agent's nginx master (see the module docstring)."""

    def __init__(self, *, state_dir: Path, binary: str, listen: tuple[str, int],
                 https_listen: tuple[str, int] | None, orphan_timeout: float) -> None:
        self.state_dir = state_dir
        self.binary = binary
        self.listen = listen
        self.https_listen = https_listen
        self.orphan_timeout = orphan_timeout
        self.paths = NginxPaths(root=str(state_dir))
        self.conf = state_dir / "nginx.conf"
        self.proc: Master | None = None
        self.adopted = False  # the master was left running by a previous agent and adopted
        self.leave_running = False  # stop() leaves nginx serving for the next agent (--keep-on-exit)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def beat(self) -> None:
        """Tell the orphan guard an agent still looks after this master."""
        beat(self.state_dir / "nginx.heartbeat")

    async def guard(self) -> None:
        """The orphan guard of the running master (it ends when its master does)."""
        await start_orphan_guard(heartbeat=self.state_dir / "nginx.heartbeat", pid_file=Path(self.paths.pid),
                                 guard_pid_file=self.state_dir / "nginx.guard.pid", after=self.orphan_timeout)

    async def adopt(self, text: str) -> bool:
        """Take over the nginx a previous agent of this node left running, if it runs exactly
        ``text`` (same listen address, paths, workers and balancer code) and answers on its
        control socket; its routes stay until the manager's first table replaces them."""
        pgid = stale_nginx_group(Path(self.paths.pid), self.conf)
        if pgid is None or not alive(pgid):
            return False
        try:
            same = self.conf.read_text() == text
        except OSError:
            same = False
        if not same or not await control_accepts(self.paths.control):
            log.info("nginx master %d runs another configuration (an upgrade?): replacing it", pgid)
            return False
        self.proc = AdoptedMaster(pgid)
        self.adopted = True
        self.beat()
        log.info("adopted nginx master %d serving on %s:%d (left running by a previous agent)", pgid, *self.listen)
        return True

    async def kill_stale_master(self) -> None:
        """Kill an nginx left running by a previous agent that died without stopping it
        (SIGKILL), which this agent cannot adopt: its master and workers, or its orphaned
        workers, still hold the port."""
        pgid = stale_nginx_group(Path(self.paths.pid), self.conf)
        if pgid is None:
            return
        log.warning("killing nginx process group %d left behind by a previous agent", pgid)
        kill_group(pgid)
        for _ in range(50):  # zombies may stay (an init that does not reap); they hold no port
            if not nginx_group_members(pgid):
                return
            await asyncio.sleep(0.05)

    async def spawn(self) -> None:
        """Start the master on ``nginx.conf``; returns once it accepts on its control socket."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.paths.control)  # a stale socket file would make the bind fail
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary, "-p", str(self.state_dir), "-c", str(self.conf),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, start_new_session=True,
            )
        except OSError as exc:
            raise ProxyError(f"cannot start {self.binary}: {exc}") from exc
        self.proc = proc
        self.adopted = False
        deadline = time.monotonic() + START_TIMEOUT
        while not await control_accepts(self.paths.control):  # nginx listens before it serves
            if proc.returncode is None and time.monotonic() > deadline:
                kill_group(proc.pid)
                await proc.wait()
            if proc.returncode is not None:
                err = await proc.stderr.read() if proc.stderr else b""
                raise ProxyError(f"nginx exited at start: {err.decode(errors='replace').strip()[-500:]}")
            await asyncio.sleep(0.02)
        log.info("nginx master %d serving on %s:%d%s", proc.pid, *self.listen,
                 f" and https {self.https_listen[0]}:{self.https_listen[1]}" if self.https_listen else "")

    async def stop(self, *, grace: float) -> None:
        """Graceful quit (SIGQUIT), then SIGKILL of the whole group after ``grace`` seconds; with
        ``leave_running``, nginx keeps serving for the next agent to adopt."""
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        if isinstance(proc, AdoptedMaster):
            proc.close()
        if self.leave_running:
            log.info("leaving nginx master %d serving for the next agent (it quits by itself %.0fs after the last "
                     "agent's heartbeat)", proc.pid, self.orphan_timeout)
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGQUIT)
        try:
            await within(proc.wait(), grace)
        except TimeoutError:
            log.warning("nginx did not quit within %.0fs; killing it", grace)
        kill_group(proc.pid)
        with contextlib.suppress(Exception):
            await within(proc.wait(), 2)

    def kill(self) -> None:
        """SIGKILL nginx's whole process group now (the agent is exiting without a clean stop)."""
        if self.proc is not None:
            kill_group(self.proc.pid)

    async def test(self, text: str) -> str:
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

