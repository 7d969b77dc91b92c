"""Defences of the DNS server against hostile input.  Pure: bytes, addresses and clock readings in.

The adapter (:mod:`daprdockr.dnsserver`) uses these on its slow path and for clients
outside its allowed networks; nothing here does I/O or uses a DNS library.

* :func:`precheck` looks at a packet's raw bytes before any full parse: the header must be
  readable (else no answer) and be a query (a response gets no answer: no reflection), the opcode
  QUERY (else NOTIMP), and then exactly one question, no answer or authority records, at most one
  additional record which must be an EDNS0 OPT at the root with at most :data:`MAX_OPTIONS`
  options, nothing after it, and no UDP query over 512 bytes without OPT (else FORMERR).  The
  question's name is walked by :func:`name_end`: labels of at most 63 bytes, at most 255 bytes in
  all, and compression pointers that point strictly before the part of the name already read (so
  no loop is possible) with at most :data:`MAX_HOPS` of them.  A packet that passes holds one
  question and at most one OPT record, so a full parse of it costs a bounded amount whatever the
  packet's size; one that fails costs a few header reads.
* :func:`error_reply` (a header-only error) and :func:`truncated_reply` (TC=1 with the question
  and no records, so the client retries over TCP) are built from the query's bytes;
  :func:`udp_limit` is the largest UDP answer a client accepts.
* :func:`client_key` sorts clients: ``""`` for an address inside the allowed networks, else the
  key of its rate-limit bucket (its /24 for IPv4, its /56 for IPv6).  :class:`ResponseRateLimiter`
  keeps one :class:`~daprdockr.core.ratelimit.TokenBucket` per key (bounded table, least recently
  used key evicted) and says per response whether to send it, drop it, or "slip" it (send a
  truncated answer so that a real client behind a spoofed flood can still get through over TCP).
  :meth:`RrlPolicy.shared_by` divides one budget among the processes that share an address.
* :func:`outside_limit` is the largest UDP answer a client outside the allowed networks gets:
  :data:`OUTSIDE_FACTOR` times its query, and at most :data:`OUTSIDE_MAX` bytes, so that a spoofed
  source gains at most that factor (a real client retries the truncated answer over TCP, which
  cannot be spoofed).  :func:`allowed_networks` is the one meaning of ``--dns-allow``: loopback,
  the host's own addresses and (the agent's) its containers' networks always, plus the given ones.
* :func:`reaches_self` tells whether forwarding to an upstream would come back to this server:
  same port, and the upstream is the address we listen on, or any address the host owns when we
  listen on a wildcard.  :func:`local_networks` reads those addresses from the text of
  ``/proc/net/fib_trie`` and ``/proc/net/if_inet6``.
"""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any, Literal

from daprdockr.core.ratelimit import TokenBucket

Network = IPv4Network | IPv6Network
Verdict = Literal["send", "slip", "drop"]

FORMERR, NOTIMP, REFUSED = 1, 4, 5
OPT = 41
EDNS_SIZE = 1232  # our advertised UDP payload size (DNS flag day 2020)
MAX_UDP_PLAIN = 512  # largest UDP message without EDNS (RFC 1035)
MAX_NAME = 255
MAX_HOPS = 8  # compression pointers followed in one name (a query needs none)
MAX_OPTIONS = 16  # EDNS options in one query (cookie, padding, client subnet, ...: a handful)
LOOPBACK: tuple[Network, ...] = (IPv4Network("127.0.0.0/8"), IPv6Network("::1/128"))
V4_PREFIX, V6_PREFIX = 24, 56
OUTSIDE_FACTOR = 3  # an outside client's UDP answer: at most this many times its query ...
OUTSIDE_MAX = 512  # ... and at most this many bytes (beyond: TC=1 with the question only)
WILDCARDS = ("", "0.0.0.0", "::")


# ---------------------------------------------------------------------------------- packets
@dataclass(frozen=True, slots=True)
class Check:
    """What :func:`precheck` found: go on (rcode 0, not drop), drop, or answer ``rcode``."""

    rcode: int = 0  # 0: a well-formed query; else answer this rcode (header only)
    drop: bool = False  # no answer at all
    qend: int = 0  # offset just after the question
    edns: int = 0  # the client's EDNS0 UDP payload size (at least 512), 0 without OPT


_DROP = Check(drop=True)
_FORMERR = Check(rcode=FORMERR)
_NOTIMP = Check(rcode=NOTIMP)


def name_end(data: bytes, offset: int, *, max_hops: int = MAX_HOPS) -> int:
    """Offset just after the (maybe compressed) name at ``offset``, or -1 if it is not a sound name.

    Sound: every label fits, label lengths are 0-63 (the 0x40/0x80 label types are refused),
    the name is at most 255 bytes, and it follows at most ``max_hops`` pointers, each pointing
    strictly before the start of the part read so far (which rules out loops).
    """
    n = len(data)
    i = floor = offset
    end = -1
    hops = length = 0
    while i < n:
        b = data[i]
        if b == 0:
            return i + 1 if end < 0 else end
        if b < 0x40:
            length += b + 1
            if length >= MAX_NAME:  # plus the root byte
                return -1
            i += b + 1
            continue
        if b < 0xC0 or i + 1 >= n:
            return -1
        target = ((b & 0x3F) << 8) | data[i + 1]
        hops += 1
        if hops > max_hops or target >= floor:
            return -1
        if end < 0:
            end = i + 2
        i = floor = target
    return -1


def precheck(data: bytes, *, tcp: bool) -> Check:
    """The cheap check of a packet's raw bytes before any full parse (see the module docstring)."""
    n = len(data)
    if n < 12 or data[2] & 0x80:
        return _DROP  # no readable header, or a response
    if data[2] & 0x78:
        return _NOTIMP  # opcode other than QUERY
    if data[4:10] != b"\x00\x01\x00\x00\x00\x00":
        return _FORMERR  # QDCOUNT 1, ANCOUNT 0, NSCOUNT 0
    arcount = (data[10] << 8) | data[11]
    if arcount > 1 or (arcount == 0 and n > MAX_UDP_PLAIN and not tcp):
        return _FORMERR
    qname_end = name_end(data, 12)
    if qname_end < 0:
        return _FORMERR
    qend = qname_end + 4
    if arcount == 0:
        return Check(qend=qend) if qend == n else _FORMERR
    # one additional record: an OPT at the root (name 0, type 41, class = UDP size, TTL, RDLENGTH)
    if qend + 11 > n or data[qend] != 0 or data[qend + 1] != 0 or data[qend + 2] != OPT:
        return _FORMERR
    rdata = qend + 11
    if rdata + ((data[qend + 9] << 8) | data[qend + 10]) != n:
        return _FORMERR
    options = 0
    i = rdata
    while i < n:
        options += 1
        if options > MAX_OPTIONS or i + 4 > n:
            return _FORMERR
        i += 4 + ((data[i + 2] << 8) | data[i + 3])
    if i != n:
        return _FORMERR
    return Check(qend=qend, edns=max(MAX_UDP_PLAIN, (data[qend + 3] << 8) | data[qend + 4]))


def udp_limit(edns: int) -> int:
    """The largest UDP answer for a client: 512 without EDNS, else its size capped at ours."""
    return min(max(MAX_UDP_PLAIN, edns), EDNS_SIZE) if edns else MAX_UDP_PLAIN


def outside_limit(query: int) -> int:
    """The largest UDP answer for a client outside the allowed networks whose query is ``query``
    bytes: a small multiple of it, never above :data:`OUTSIDE_MAX` (no amplification worth having)."""
    return min(OUTSIDE_FACTOR * query, OUTSIDE_MAX)


def _flags(data: bytes, rcode: int, *, ra: bool, tc: bool = False) -> bytes:
    """QR set, opcode and RD echoed, then RA and the rcode."""
    return bytes((0x80 | (data[2] & 0x79) | (0x02 if tc else 0), (0x80 if ra else 0) | rcode))


def error_reply(data: bytes, rcode: int, *, ra: bool) -> bytes | None:
    """A header-only answer with ``rcode`` to the query in ``data``; None if it has no header."""
    if len(data) < 12:
        return None
    return bytes(data[:2]) + _flags(data, rcode, ra=ra) + bytes(8)


OPT_RR = b"\x00\x00\x29" + EDNS_SIZE.to_bytes(2, "big") + bytes(6)  # root, OPT, our UDP size, no options


def truncated_reply(data: bytes, *, qend: int, rcode: int, ra: bool, edns: bool) -> bytes:
    """TC=1, the question of ``data`` (which ends at ``qend``), no records; our OPT if ``edns``."""
    counts = b"\x00\x01\x00\x00\x00\x00\x00\x01" if edns else b"\x00\x01\x00\x00\x00\x00\x00\x00"
    opt = OPT_RR if edns else b""
    return bytes(data[:2]) + _flags(data, rcode, ra=ra, tc=True) + counts + bytes(data[12:qend]) + opt


# ---------------------------------------------------------------------------------- clients
def _address(host: str) -> IPv4Address | IPv6Address:
    """``host`` as an address: scope dropped, IPv4-mapped IPv6 as IPv4.  ValueError if not one."""
    ip = ip_address(host.split("%", 1)[0])
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_key(host: str, *, allow: Sequence[Network]) -> str:
    """``""`` for a client inside ``allow``, else its rate-limit key (its /24 or /56 network)."""
    try:
        ip = _address(host)
    except ValueError:
        return host or "?"  # not an address (never from a socket): a bucket of its own
    if any(ip in net for net in allow):
        return ""
    if isinstance(ip, IPv4Address):
        return str(IPv4Network((int(ip) >> (32 - V4_PREFIX) << (32 - V4_PREFIX), V4_PREFIX)))
    return str(IPv6Network((int(ip) >> (128 - V6_PREFIX) << (128 - V6_PREFIX), V6_PREFIX)))


def allowed_networks(given: Iterable[Network], *, host: Iterable[Network], containers: Iterable[Network] = ()
                     ) -> tuple[Network, ...]:
    """The networks whose clients may recurse and are never rate limited: loopback, the host's own
    addresses and the networks of its containers always, plus ``given`` (``--dns-allow`` adds,
    in the agent and in ``daprdockr dns`` alike)."""
    return tuple(dict.fromkeys((*LOOPBACK, *host, *containers, *given)))


@dataclass(frozen=True, slots=True, kw_only=True)
class RrlPolicy:
    """Response rate limiting for clients outside the allowed networks, per /24 or /56."""

    rate: float = 100.0  # responses per second per key, sustained
    burst: int = 200  # responses at once after a quiet time
    slip: int = 2  # every slip-th limited response is sent truncated (TC=1); 0: drop them all
    max_keys: int = 10_000  # buckets kept; the least recently used one is forgotten beyond

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1 or self.slip < 0 or self.max_keys < 1:
            raise ValueError(f"invalid response rate limit {self}")

    def shared_by(self, processes: int) -> RrlPolicy:
        """Each process's part when ``processes`` share one address (the kernel spreads a client's
        queries over them at random): together they allow this policy's rate and burst."""
        if processes <= 1:
            return self
        return dataclasses.replace(self, rate=self.rate / processes, burst=max(1, self.burst // processes))


DEFAULT_RRL = RrlPolicy()  # 100 responses/s per /24 or /56 outside ``allow``, bursts of 200, slip 2


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsLimits:
    """A DNS responder's limits against hostile input, the same in every process on its address.

    ``allow``: the networks whose clients may recurse (forwarded names) and are never rate
    limited; ``rrl``: the rate limit of UDP responses to everyone else (None: unlimited);
    ``max_forwards``: forwards in flight at once (SERVFAIL beyond); ``max_tcp``: TCP connections
    served at once, ``max_tcp_per_client`` of them from one address (closed beyond);
    ``tcp_write_timeout``: seconds an answer may wait to be written to a TCP client.
    """

    allow: tuple[Network, ...] = LOOPBACK
    rrl: RrlPolicy | None = DEFAULT_RRL
    max_forwards: int = 256
    max_tcp: int = 64
    max_tcp_per_client: int = 8
    tcp_write_timeout: float = 5.0

    def to_config(self) -> dict[str, Any]:
        """JSON values (a DNS worker process's config)."""
        return {
            "allow": [str(net) for net in self.allow],
            "rrl": dataclasses.asdict(self.rrl) if self.rrl is not None else None,
            "max_forwards": self.max_forwards, "max_tcp": self.max_tcp,
            "max_tcp_per_client": self.max_tcp_per_client, "tcp_write_timeout": self.tcp_write_timeout,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DnsLimits:
        """The limits :meth:`to_config` wrote (the defaults for missing keys)."""
        kwargs: dict[str, Any] = {}
        if "allow" in config:
            kwargs["allow"] = tuple(ip_network(str(net)) for net in config["allow"])
        if "rrl" in config:
            kwargs["rrl"] = RrlPolicy(**config["rrl"]) if config["rrl"] is not None else None
        for key, kind in (("max_forwards", int), ("max_tcp", int), ("max_tcp_per_client", int),
                          ("tcp_write_timeout", float)):
            if key in config:
                kwargs[key] = kind(config[key])
        return cls(**kwargs)


DEFAULT_LIMITS = DnsLimits()


class ResponseRateLimiter:
    """One token bucket per key, at most ``policy.max_keys`` of them (least recently used evicted)."""

    def __init__(self, policy: RrlPolicy) -> None:
        self.policy = policy
        self._empty = TokenBucket(burst=policy.burst, interval=1.0 / policy.rate)
        self._table: OrderedDict[str, tuple[TokenBucket, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def check(self, key: str, *, now: float) -> Verdict:
        """Spend a token of ``key`` at ``now``: send; or, with none left, slip or drop."""
        table = self._table
        entry = table.get(key)
        if entry is None:
            if len(table) >= self.policy.max_keys:
                table.popitem(last=False)
            bucket, limited = self._empty, 0
        else:
            table.move_to_end(key)
            bucket, limited = entry
        if bucket.delay(now=now) == 0.0:
            table[key] = (bucket.take(now=now), limited)
            return "send"
        limited += 1
        table[key] = (bucket, limited)
        slip = self.policy.slip
        return "slip" if slip and limited % slip == 0 else "drop"


# ---------------------------------------------------------------------------------- upstreams
def _destination(host: str) -> IPv4Address | IPv6Address | None:
    """Where packets sent to ``host`` go: 0.0.0.0 and :: mean this host's loopback (Linux)."""
    try:
        ip = _address(host)
    except ValueError:
        return None
    if ip.is_unspecified:
        return IPv4Address("127.0.0.1") if isinstance(ip, IPv4Address) else IPv6Address("::1")
    return ip


def reaches_self(upstream: tuple[str, int], *, listen: tuple[str, int], local: Iterable[Network]) -> bool:
    """Would a query sent to ``upstream`` arrive at a server listening on ``listen``?

    ``local`` holds the host's own addresses.  A wildcard listen address receives at every local
    address ("0.0.0.0" only IPv4; "::" both, as a UDP socket on it is dual-stack on Linux); any
    other listen address only at itself.  An upstream that is not an address literal is not us.
    """
    if upstream[1] != listen[1]:
        return False
    target = _destination(upstream[0])
    if target is None:
        return False
    if listen[0] in WILDCARDS:
        if listen[0] == "0.0.0.0" and isinstance(target, IPv6Address):
            return False
        return any(target in net for net in local)
    return target == _destination(listen[0])


_FIB_ADDRESS = re.compile(r"[|+]-- ([0-9.]+)\s*$")
_FIB_LOCAL = re.compile(r"^\s*/(\d+) host LOCAL\s*$")


def local_networks(*, fib_trie: str, if_inet6: str) -> list[Network]:
    """The host's own addresses from ``/proc/net/fib_trie`` (IPv4) and ``/proc/net/if_inet6`` texts.

    fib_trie lists each address of the local table followed by lines such as ``/32 host LOCAL``
    (``/8 host LOCAL`` for all of 127/8); if_inet6 has one address per line in 32 hex digits.
    Loopback is always included.  Lines that do not parse are skipped.
    """
    found: dict[Network, None] = dict.fromkeys(LOOPBACK)
    current = ""
    for line in fib_trie.splitlines():
        if m := _FIB_ADDRESS.search(line):
            current = m.group(1)
        elif (m := _FIB_LOCAL.match(line)) and current:
            try:
                found[IPv4Network(f"{current}/{m.group(1)}", strict=False)] = None
            except ValueError:
                continue
    for line in if_inet6.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            try:
                found[IPv6Network((int(fields[0], 16), 128))] = None
            except ValueError:
                continue
    return list(found)
