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
from collections.abc import Iterable
from pathlib import Path

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
