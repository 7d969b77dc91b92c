"""Host and socket plumbing for the DNS responder: upstreams from resolv.conf, the host's own
addresses, SO_REUSEPORT groups with a random spread, a probe bind that detects a taken address,
and a receive buffer grown as far as the system allows (``net.core.rmem_max``).
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct

from daprdockr.core.dnsguard import Network, local_networks
from daprdockr.core.dnswire import Address

log = logging.getLogger(__name__)


def resolv_conf_upstreams(path: str = "/etc/resolv.conf") -> list[Address]:
    """``nameserver`` lines of resolv.conf as (address, 53) pairs."""
    result: list[Address] = []
    try:
        with open(path) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    result.append((parts[1].split("%")[0], 53))
    except OSError:
        log.warning("cannot read %s; no upstream resolvers", path)
    return result


def host_networks() -> list[Network]:
    """The addresses this host owns (its network namespace's), loopback always among them."""
    texts = []
    for path in ("/proc/net/fib_trie", "/proc/net/if_inet6"):
        try:
            with open(path) as fh:
                texts.append(fh.read())
        except OSError:
            log.debug("cannot read %s; only loopback counts as this host's", path)
            texts.append("")
    return local_networks(fib_trie=texts[0], if_inet6=texts[1])


SO_ATTACH_REUSEPORT_CBPF = 51  # linux/asm-generic/socket.h
SKF_AD_RANDOM = 0xFFFFF000 + 56  # SKF_AD_OFF + SKF_AD_RANDOM: a random u32


def attach_random_spread(sock: socket.socket, members: int) -> None:
    """Classic BPF for the reuseport group: ``A = random(); A %= members; return A``."""
    program = [(0x20, SKF_AD_RANDOM), (0x94, members), (0x16, 0)]  # ld abs; alu mod k; ret a
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", op, 0, 0, k) for op, k in program))
    fprog = struct.pack("HP", len(program), ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def probe_bind(listen: Address) -> None:
    """Bind and close a plain UDP socket: OSError (EADDRINUSE) if anyone holds ``listen``."""
    family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind(listen)


RMEM_MAX = "/proc/sys/net/core/rmem_max"
_capped_warned = False


def grow_receive_buffer(sock: socket.socket, *, want: int, rmem_max: str = RMEM_MAX) -> int:
    """Ask for a ``want``-byte receive buffer on ``sock``, or the system's ``net.core.rmem_max``
    if that is lower (logged once per process, with the sysctl that raises it); returns the size
    the kernel reports (twice the size asked: it counts its bookkeeping too)."""
    global _capped_warned
    try:
        with open(rmem_max) as fh:
            limit = int(fh.read().strip())
    except (OSError, ValueError):
        limit = want
    size = min(want, limit)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except OSError as exc:
        log.warning("cannot set the DNS receive buffer to %d bytes: %s", size, exc)
    got = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    if size < want and not _capped_warned:
        _capped_warned = True
        log.warning("DNS receive buffer capped at %d bytes by net.core.rmem_max (wanted %d): a flood can crowd "
                    "out allowed clients; raise it with sysctl -w net.core.rmem_max=%d", size, want, want)
    return got
