"""The nginx master as the agent holds it: a child it spawned, or one a previous agent left running.

* :class:`Master` — what the nginx manager needs of the master process (pid, exit, signals);
  an ``asyncio.subprocess.Process`` is one, :class:`AdoptedMaster` is the other: a master that
  is not our child (a previous agent of this node started it), watched through a pidfd that
  becomes readable when it exits (polled where the kernel has no pidfd).
* The orphan guard (:func:`start_orphan_guard`): nginx runs in a session of its own, so it
  outlives an agent that is SIGKILLed and keeps serving its last routing table (the data plane
  outlives the control plane for a while: a restarted agent adopts it and no connection drops).
  A small ``sh`` loop started beside it sends the master SIGQUIT (a graceful quit) once the
  agent's heartbeat file has not been touched for ``orphan_timeout`` seconds, and ends when the
  master is gone, so an agent that never comes back leaves no server behind for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

# $1 heartbeat file, $2 nginx pid file, $3 seconds, $4 the guard's own pid file
GUARD = """
echo $$ > "$4"
while sleep 1; do
  pid=$(cat "$2" 2>/dev/null) || exit 0
  kill -0 "$pid" 2>/dev/null || exit 0
  beat=$(stat -c %Y "$1" 2>/dev/null) || beat=0
  if [ $(( $(date +%s) - beat )) -gt "$3" ]; then
    echo "daprdockr: no agent for $3 s; nginx $pid quits" >&2
    kill -QUIT "$pid"
    exit 0
  fi
done
"""


class Master(Protocol):
    """The nginx master process (spawned by us, or adopted)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...


class AdoptedMaster:
    """A running master that is not our child: we cannot reap it, only watch it end."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._done = asyncio.Event()
        self._fd: int | None = None
        loop = asyncio.get_running_loop()
        try:
            self._fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._poller: asyncio.Task[None] | None = loop.create_task(self._poll(), name=f"nginx {pid} watch")
        else:
            self._poller = None
            loop.add_reader(self._fd, self._exited)

    def _exited(self) -> None:
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        if self.returncode is None:
            self.returncode = -1  # (not our child: its exit status is its parent's to read)
        self._done.set()

    async def _poll(self) -> None:
        while alive(self.pid):  # noqa: ASYNC110 (another process's life: no event to wait on)
            await asyncio.sleep(0.2)
        self._exited()

    async def wait(self) -> int:
        await self._done.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def close(self) -> None:
        """Stop watching (the manager lets go of it without stopping it)."""
        if self._poller is not None:
            self._poller.cancel()
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _guard_running(guard_pid_file: Path) -> bool:
    with contextlib.suppress(OSError, ValueError):
        return alive(int(guard_pid_file.read_text().strip()))
    return False


async def start_orphan_guard(*, heartbeat: Path, pid_file: Path, guard_pid_file: Path, after: float) -> None:
    """Start the guard (nginx quits ``after`` seconds without a heartbeat) unless one already
    watches this nginx (its pid file names a live process)."""
    if _guard_running(guard_pid_file):
        return
    with contextlib.suppress(OSError):
        os.close(os.open(heartbeat, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    beat(heartbeat)
    await asyncio.create_subprocess_exec(
        "sh", "-c", GUARD, "daprdockr-nginx-guard", str(heartbeat), str(pid_file), str(max(1, round(after))),
        str(guard_pid_file), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, start_new_session=True)


def beat(heartbeat: Path) -> None:
    """The agent is alive: the guard leaves its nginx alone."""
    with contextlib.suppress(OSError):
        os.utime(heartbeat)
