"""Ending nginx's connections to instances whose host is gone (the kernel's sock_destroy, ``ss -K``).

When a node's lease expires its host is dead or cut off, and every request nginx has in flight
to that host's instances waits for ``proxy_read_timeout`` (60 s) for an answer that never comes:
nginx cannot cancel another request's upstream from Lua.  Destroying the socket can: the kernel
aborts it (ECONNABORTED), nginx sees an upstream error at once and tries the request on another
instance if it is idempotent (a 502 otherwise, as for any failed backend).  Only the sockets of
the given processes (nginx's master and workers) to the given peers are destroyed, each by its
exact address pair; ``ss -K`` (iproute2) asks the kernel through inet_diag's SOCK_DESTROY, which
needs ``CONFIG_INET_DIAG_DESTROY`` and CAP_NET_ADMIN (root).  Where either is missing nothing is
destroyed and the requests wait for their read timeout, as before; the count says so.
:class:`DeadHostCuts` decides, as nginx's routing table changes, which peers' hosts are gone.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import shutil
import socket
import struct
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from daprdockr.adapters.procs import nginx_group_members
from daprdockr.core.routing import Table, removed_peers

log = logging.getLogger(__name__)

Endpoint = tuple[str, int]
Connection = tuple[Endpoint, Endpoint]  # (local, remote)
_LINE = re.compile(rb"^ *\d+: ([0-9A-F]+):([0-9A-F]{4}) ([0-9A-F]+):([0-9A-F]{4}) (01|02) (?:\S+ +){5}(\d+) ", re.M)
BATCH = 32  # connections per ss call (its filter grows with each)


def _address(hexaddr: bytes) -> str:
    raw = bytes.fromhex(hexaddr.decode())
    if len(raw) == 4:
        return socket.inet_ntoa(struct.pack("<I", struct.unpack(">I", raw)[0]))
    words = b"".join(struct.pack("<I", struct.unpack(">I", raw[i:i + 4])[0]) for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def _socket_inodes(pids: Iterable[int]) -> set[int]:
    inodes: set[int] = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    return inodes


def connections_to(pids: Iterable[int], peers: Iterable[Endpoint]) -> list[Connection]:
    """The TCP connections (established, or still connecting) that processes ``pids`` hold to
    any of ``peers``.  Blocking (reads /proc): callers run it in a thread."""
    wanted = {(str(ipaddress.ip_address(ip)), port) for ip, port in peers}
    pid_list = list(pids)
    if not wanted or not pid_list:
        return []
    inodes = _socket_inodes(pid_list)
    found = []
    for table in ("tcp", "tcp6"):
        try:
            text = Path(f"/proc/{pid_list[0]}/net/{table}").read_bytes()
        except OSError:
            continue
        for m in _LINE.finditer(text):
            remote = (_address(m.group(3)), int(m.group(4), 16))
            if remote in wanted and int(m.group(6)) in inodes:
                found.append(((_address(m.group(1)), int(m.group(2), 16)), remote))
    return found


def _filter(conn: Connection) -> list[str]:
    (lip, lport), (rip, rport) = conn
    return ["(", "src", lip, "sport", "=", f":{lport}", "dst", rip, "dport", "=", f":{rport}", ")"]


async def destroy(connections: list[Connection]) -> int:
    """Destroy ``connections`` (``ss -K``); returns how many ``ss`` reported killed."""
    ss = shutil.which("ss") or "/usr/bin/ss"
    killed = 0
    for i in range(0, len(connections), BATCH):
        expr: list[str] = []
        for conn in connections[i:i + BATCH]:
            expr += (["or"] if expr else []) + _filter(conn)
        try:
            proc = await asyncio.create_subprocess_exec(ss, "-K", "-t", "-n", *expr, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
        except OSError as exc:
            log.warning("cannot run ss to end connections to a dead host: %s", exc)
            return killed
        killed += max(0, len(out.splitlines()) - 1)  # its header, then one line per socket it destroyed
        if proc.returncode != 0:
            log.warning("ss -K failed (%s): %s", proc.returncode, err.decode(errors="replace").strip()[-200:])
    return killed


LEFT_WINDOW = 30.0  # seconds a peer that left the table stays a candidate for a cut when its host goes


class DeadHostCuts:
    """nginx's connections to the peers of gone hosts, ended as the routing table changes.

    Peers that left the table because their node is gone (no live node has their address): their
    connections are ended now, so the requests in flight there are retried (or answered 502) at
    once instead of after the read timeout.  A node's records and its node key go in one etcd
    revision but may reach the table in two pushes: peers that left within ``LEFT_WINDOW``
    seconds count when their node goes."""

    def __init__(self, *, on_cut: Callable[[int], None], window: float = LEFT_WINDOW) -> None:
        self.on_cut = on_cut  # told how many connections each cut ended
        self.window = window
        self._left: dict[Endpoint, float] = {}  # peers that left the table lately -> when
        self._cutting: set[asyncio.Task[None]] = set()

    def table_changed(self, old: Table | None, new: Table, *, live_hosts: frozenset[str], master: int | None) -> None:
        now = time.monotonic()
        if old is not None:
            self._left.update(dict.fromkeys(removed_peers(old, new), now))
        self._left = {p: t for p, t in self._left.items() if now - t <= self.window}
        gone = {peer for peer in self._left if peer[0] not in live_hosts}
        for peer in gone:
            del self._left[peer]
        if not gone or master is None:
            return
        task = asyncio.create_task(self._cut(gone, master), name="nginx cut dead hosts")
        self._cutting.add(task)
        task.add_done_callback(self._cutting.discard)

    async def _cut(self, peers: set[Endpoint], master: int) -> None:
        try:
            conns = await asyncio.to_thread(connections_to, nginx_group_members(master) or [master], peers)
            killed = await destroy(conns) if conns else 0
        except Exception:  # never let this end the manager's loop
            log.exception("ending nginx's connections to %s failed", sorted(peers))
            return
        self.on_cut(killed)
        if conns:
            log.info("ended %d of nginx's %d connections to instances of gone hosts (%s)", killed, len(conns),
                     ", ".join(f"{ip}:{port}" for ip, port in sorted(peers)))
