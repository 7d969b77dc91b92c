"""The systemd notify protocol (``sd_notify``): lines sent as one datagram to ``$NOTIFY_SOCKET``.

``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``.  The socket is an AF_UNIX datagram
socket given by path, or in the abstract namespace when it starts with ``@``.  Without
``NOTIFY_SOCKET`` (not started by systemd) every call does nothing.  The watchdog interval is half
of ``$WATCHDOG_USEC``, and only when ``$WATCHDOG_PID`` is unset or this process.  A failed send is
logged once and never raised: systemd's view of the agent must not stop the agent.

Written here rather than taken from the ``sdnotify`` package: that package drops a failed send
silently (unless built with ``debug``) and leaves ``WATCHDOG_USEC`` / ``WATCHDOG_PID`` to the caller,
which are the parts this module adds; the protocol itself is one ``sendto``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, MutableMapping

log = logging.getLogger(__name__)
_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def socket_address(text: str) -> str | bytes:
    """``@name`` -> the abstract address ``\\0name``; a path stays itself."""
    return b"\0" + text[1:].encode() if text.startswith("@") else text


def watchdog_interval(environ: Mapping[str, str], *, pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``WATCHDOG_USEC``; None when there is no
    watchdog, it is for another process (``WATCHDOG_PID``), or the values are not numbers."""
    usec, owner = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 2e6


class Notifier:
    """Sends notify lines to one socket (or nowhere, when ``address`` is None)."""

    def __init__(self, address: str | None, *, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog = watchdog  # seconds between pings, None: no watchdog
        self.sent = 0
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True) -> Notifier:
        """The notifier systemd asked for; ``unset`` removes the variables so that the processes the
        agent starts (nginx, DNS workers) do not inherit them (``NotifyAccess=main`` ignores them anyway)."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        notifier = cls(address, watchdog=watchdog_interval(env, pid=os.getpid()) if address else None)
        if unset:
            for name in _VARIABLES:
                env.pop(name, None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send the lines as one message; False when there is no socket or the send failed."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), socket_address(self.address))
        except OSError as exc:
            if not self._warned:
                log.warning("systemd notify socket %s: %s (notifications are dropped)", self.address, exc)
                self._warned = True
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
