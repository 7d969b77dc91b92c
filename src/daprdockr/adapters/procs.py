"""Reading /proc: an nginx process group left behind by a previous agent, the TCP connections
still open to a published port (to drain an instance before it stops), and whether a container's
process listens on its port yet (to route an instance only once it can answer).

Connections are counted in the container's own (small) socket table, and in the file descriptors
of Docker's userland proxy processes.  The host's whole table is read only when the container's
cannot be: under load it holds tens of thousands of lines (TIME_WAIT included), each read costly
in CPU.

The agent runs nginx in a session of its own, so the group id of its workers is the master's pid
(kept in nginx's pid file).  After an agent is killed with SIGKILL, its nginx master or orphaned
workers may still hold the listening socket; :func:`stale_nginx_group` finds that group so the
next start can kill it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import struct
from collections.abc import Iterable
from pathlib import Path


def _cmdline(pid: int) -> bytes:
    """The command line of ``pid``; empty if it is gone (or a zombie)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def nginx_group_members(pgid: int) -> list[int]:
    """Live (not zombie) nginx processes whose process group is ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and _cmdline(int(entry.name)).startswith(b"nginx"):
            found.append(int(entry.name))
    return found


def stale_nginx_group(pid_file: Path, conf: Path) -> int | None:
    """The process group of an nginx a previous agent left running on ``conf``, or ``None``.

    nginx runs in its own session, so its group id is the master's pid (from the pid file).
    The group is ours while that master still runs ``conf``, or, when the master itself was
    killed, while nginx workers remain in the group (they keep the listening socket).
    """
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid <= 1:
        return None
    cmdline = _cmdline(pid)
    if cmdline:
        return pid if b"nginx" in cmdline and str(conf).encode() in cmdline else None
    return pid if nginx_group_members(pid) else None


_ESTABLISHED = "01"
_LISTEN = "0A"


def _hex_endpoint(ip: str, port: int) -> tuple[str, str]:
    """How /proc/net/tcp(6) writes ``ip:port``: the address in host byte order, hex."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return "tcp", f"{struct.unpack('<I', socket.inet_aton(ip))[0]:08X}:{port:04X}"
    raw = addr.packed
    words = "".join(f"{struct.unpack('<I', raw[i:i + 4])[0]:08X}" for i in range(0, 16, 4))
    return "tcp6", f"{words}:{port:04X}"


def _netns_tables(pid: int) -> list[Path]:
    """The TCP socket tables (IPv4, IPv6) of the network namespace of process ``pid``."""
    return [Path(f"/proc/{pid}/net/{t}") for t in ("tcp", "tcp6")]


def _count_sockets(tables: Iterable[Path], local: bytes, *, state: str = _ESTABLISHED) -> int | None:
    """Lines of /proc TCP ``tables`` in ``state`` (default ESTABLISHED) whose local address
    matches the regular expression ``local`` (one pass per table, tens of thousands of lines under
    load); None when no table could be read."""
    pattern = re.compile(rb"^ *\d+: (?:" + local + rb") [0-9A-F]+:[0-9A-F]+ " + state.encode() + rb" ", re.M)
    found, read = 0, False
    for table in tables:
        try:
            text = table.read_bytes()
        except OSError:
            continue
        read = True
        found += len(pattern.findall(text))
    return found if read else None


def established_on_ports(pid: int, ports: Iterable[int]) -> int | None:
    """TCP connections in state ESTABLISHED whose local port is one of ``ports`` (any address), in
    the network namespace of process ``pid`` (a container's: ``/proc/<pid>/net/tcp{,6}``), or
    ``None`` when that table cannot be read.  Inside the container every client connection shows,
    however it came in: through Docker's userland proxy (a loopback publish) or straight through
    Docker's DNAT rules (a host address), where the host has no socket of its own for it."""
    wanted = b"|".join(f"{port:04X}".encode() for port in ports)
    if not wanted:
        return 0
    return _count_sockets(_netns_tables(pid), rb"[0-9A-F]+:(?:" + wanted + rb")")


def listening_on(pid: int, port: int) -> bool | None:
    """Whether a socket listens on TCP ``port`` (any address) in the network namespace of process
    ``pid``; ``None`` when its tables cannot be read (the process is gone).  Docker's userland
    proxy accepts on the published port before the container's program listens, and then resets
    each connection: only the container's own table tells that the program is ready."""
    found = _count_sockets(_netns_tables(pid), rb"[0-9A-F]+:" + f"{port:04X}".encode(), state=_LISTEN)
    return None if found is None else found > 0


def proxy_pids(ip: str, ports: Iterable[int]) -> list[int]:
    """Docker's userland proxy processes (``docker-proxy``, one per published TCP port) that
    publish one of ``ports`` on ``ip``.  Blocking (a scan of /proc): callers run it in a thread."""
    wanted = {str(port).encode() for port in ports}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = _cmdline(int(entry.name)).rstrip(b"\0").split(b"\0")
        if not argv[0].endswith(b"docker-proxy"):
            continue
        flags = dict(zip(argv[1::2], argv[2::2], strict=False))  # "-flag value" pairs
        if (flags.get(b"-proto") == b"tcp" and flags.get(b"-host-ip") == ip.encode()
                and flags.get(b"-host-port") in wanted):
            found.append(int(entry.name))
    return found


def proxied_connections(pids: Iterable[int]) -> int:
    """Client connections the userland proxy processes ``pids`` hold: each has a socket to the
    client and one to the container (or one still dialling it: a SYN the container dropped is
    sent again a second later), besides the proxy's listener."""
    total = 0
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        sockets = 0
        for fd in fds:
            try:
                sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
            except OSError:
                continue
        total += sockets // 2  # its listener, then two per connection (one while it dials)
    return total


def established_to(ip: str, ports: Iterable[int]) -> int:
    """TCP connections in state ESTABLISHED whose local end is ``ip`` and one of ``ports`` (this
    host's side of every client connected to a published port), from the host's tables: blocking,
    so callers run it in a thread."""
    by_table: dict[str, list[str]] = {}
    for port in ports:
        table, local = _hex_endpoint(ip, port)
        by_table.setdefault(table, []).append(local)
    return sum(_count_sockets([Path(f"/proc/net/{table}")],
                              b"|".join(re.escape(x.encode()) for x in locals_)) or 0
               for table, locals_ in by_table.items())
