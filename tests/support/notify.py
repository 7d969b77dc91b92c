"""A systemd notify socket for tests: a real AF_UNIX datagram socket in the abstract namespace,
read on a thread that timestamps every message."""

from __future__ import annotations

import socket
import threading
import time
import uuid

from daprdockr.adapters.sdnotify import socket_address


class Receiver:
    """``name`` is the ``NOTIFY_SOCKET`` value; ``got`` the (monotonic time, message) received."""

    def __init__(self) -> None:
        self.name = f"@daprdockr-notify-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(socket_address(self.name))
        self.sock.settimeout(0.1)
        self.got: list[tuple[float, str]] = []
        self.done = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.got.append((time.monotonic(), data.decode()))

    def pings(self) -> list[float]:
        return [at for at, text in self.got if "WATCHDOG=1" in text.split("\n")]

    def close(self) -> None:
        self.done = True
        self.thread.join()
        self.sock.close()

    def wait_for(self, line: str, *, within: float) -> float:
        """The time of the first message holding ``line``; TimeoutError after ``within`` seconds."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = [at for at, text in list(self.got) if line in text.split("\n")]
            if found:
                return found[0]
            time.sleep(0.02)
        raise TimeoutError(f"no {line!r} within {within}s; got {[text for _, text in self.got]}")
