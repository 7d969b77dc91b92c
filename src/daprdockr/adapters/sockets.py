"""Host and socket plumbing for the DNS responder: upstreams from resolv.conf, the host's own
addresses, SO_REUSEPORT groups with a random spread (or one that steers allowed clients to a
socket of their own), a probe bind that detects a taken address,
and a receive buffer grown as far as the system allows (``net.core.rmem_max``).
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct
from collections.abc import Sequence
from ipaddress import IPv4Network

from daprdockr.core.dns.guard import Network, local_networks
from daprdockr.core.dns.wire import Address

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
    attach_program(sock, [_insn(0x20, SKF_AD_RANDOM), _insn(0x94, members), _insn(0x16)])  # ld abs; mod k; ret a


SKF_NET_OFF = -0x100000  # loads relative to the network header (classic BPF's negative offsets)
MAX_STEERED = 60  # networks in one steering program (its jumps are 8-bit)


def _insn(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def steering_program(*, members: int, priority: int, networks: Sequence[IPv4Network]) -> list[bytes]:
    """Classic BPF for a reuseport group of ``members`` IPv4 UDP sockets: a datagram whose source
    is in ``networks`` goes to member ``priority``, every other one to a random other member.
    ``A = src; for each network: if A & mask == net: return priority``, then
    ``A = random() % (members - 1); if A >= priority: A += 1; return A``."""
    if not 0 < len(networks) <= MAX_STEERED or members < 2 or not 0 <= priority < members:
        raise ValueError(f"cannot steer {len(networks)} networks to member {priority} of {members}")
    body: list[tuple[int, int, int]] = [(0x20, SKF_NET_OFF + 12, -1), (0x02, 0, -1)]  # ld [net + 12]; st M[0]
    matches: list[int] = []  # positions of the jeq instructions (they jump to ``ret #priority``)
    for n, net in enumerate(networks):
        if n:
            body.append((0x60, 0, -1))  # ld M[0]
        body.append((0x54, int(net.netmask), -1))  # and #mask
        matches.append(len(body))
        body.append((0x15, int(net.network_address), -1))  # jeq #net
    body += [(0x20, SKF_AD_RANDOM, -1), (0x94, members - 1, -1), (0x35, priority, -2),  # ld rand; mod; jge
             (0x04, 1, -1), (0x16, 0, -1), (0x06, priority, -1)]  # add #1; ret a; ret #priority
    last = len(body) - 1
    out = []
    for pos, (code, k, kind) in enumerate(body):
        if pos in matches:
            out.append(_insn(code, k, jt=last - pos - 1, jf=0))
        elif kind == -2:
            out.append(_insn(code, k, jt=0, jf=1))  # jge: add #1 next, else skip it to ret a
        else:
            out.append(_insn(code, k))
    return out


def attach_program(sock: socket.socket, program: Sequence[bytes]) -> None:
    code = ctypes.create_string_buffer(b"".join(program))
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
