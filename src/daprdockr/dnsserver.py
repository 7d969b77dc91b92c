"""DNS server for the ``.container`` zone (asyncio UDP + TCP, dnslib), forwarding everything else.

Hot path.  Most queries are one question with at most an EDNS0 OPT record.  Such a query's
header and question are parsed by hand (no dnslib), and the answer comes from a cache of
pre-encoded wire responses keyed on the raw question bytes, the RD bit, the EDNS buffer size and
the transport; only the 2-byte id is patched per query.  Names with several records keep up to
eight rotations that are served in turn (round robin); each is encoded the first time it is
served, so a query costs at most one encoding, and an answer too large for UDP (truncated, so
the same for every rotation) keeps one.  The cache holds only in-zone answers, each under its
owner: the service its name belongs to, the group (for ``<group>.<domain>``), or *volatile*
(the apex, and negative answers, which carry the SOA and its serial).  :meth:`DnsServer.update`
ends, in O(1) each, the answers of the services that changed and of their groups and every
volatile answer (an owner's token is marked dead: a dead entry is a miss), so answers follow
etcd within one watch event and an event costs what it changed, not the cache's size.  The only
other per-datagram work is one set lookup of the client's address (see "Clients" below).

Slow path: every packet first goes through the cheap check of its raw bytes
(:func:`daprdockr.core.dns.guard.precheck`): no readable header or a response (QR set) gets no
answer (no reflection), an opcode other than QUERY gets NOTIMP, and anything but exactly one
question, no answer or authority records, at most one additional record (an EDNS0 OPT with few
options), nothing after it, a bounded question name (no compression loops, at most 8 pointers,
255 bytes) and at most 512 bytes over UDP without OPT gets a header-only FORMERR.  So a full
parse only ever sees one question and one OPT record, and a hostile packet (thousands of
questions behind compression chains) costs a bounded scan, not a stalled loop.  Then dnslib parses
the query, and either the answer is looked up in the zone (built from the newest state on the
first query that needs it), encoded by :func:`daprdockr.core.dns.encode.encode_answer` (linear in
its records) and cached, or the query is
forwarded verbatim to the upstream resolvers in order (UDP, or TCP for TCP clients and truncated
upstream replies), with a timeout; SERVFAIL when none answers.  ANY gets the RFC 8482 minimal
answer (one HINFO "RFC8482").  UDP answers larger than 512 bytes (or the client's EDNS0 buffer
size, capped at the 1232 we advertise, :data:`daprdockr.core.dns.guard.EDNS_SIZE`) are truncated
with the TC bit so that the client retries over TCP; that includes forwarded answers (an
upstream answer fetched over TCP after a truncated UDP one goes back as a TC=1 header with the
question).  A client outside ``allow`` gets at most
:func:`~daprdockr.core.dns.guard.outside_limit` of its query over UDP (3 times it, at most 512
bytes; beyond, TC=1 with the question only: :func:`capped`), so a spoofed source gains no
amplification worth having; TCP (which cannot be spoofed) still gets the full answer.

Forwarding, bounded.  At most ``max_forwards`` forwards are in flight (each holds a socket);
beyond that a query is answered SERVFAIL at once.  An upstream that would reach this very server,
or one of the agent's other DNS listeners (``siblings``: the loopback listener beside the
advertise address), is dropped at start with a warning: same port, and its address (0.0.0.0 and
:: meaning loopback, IPv4-mapped IPv6 as IPv4) is that listen address, or any address the host
owns (from ``/proc/net/fib_trie`` and ``/proc/net/if_inet6``, loopback always) for a wildcard.
The cap also bounds a loop through another server that forwards back to us, which no address
check can see.  A SERVFAIL or REFUSED from one upstream moves on to the next, as a stub
resolver does.

Clients. Recursion is only for clients in ``allow`` (by default loopback; the agent passes this
host's own addresses and its containers' network too): others get REFUSED for names outside the
zone, while zone answers stay open to all. UDP clients outside ``allow`` are also rate limited
(:class:`daprdockr.core.dns.guard.ResponseRateLimiter`: a token bucket per /24 or /56, ``rrl``; a
limited response is dropped, or every ``slip``-th one sent as TC=1 with only the question, so a
real client whose network is being spoofed can still get through over TCP). Client addresses are
remembered as inside (a set) or outside with their bucket key (a dict), each of at most
:data:`MAX_CLIENTS` entries (cleared when full), so an allowed client costs one set lookup per
datagram and is never limited. TCP clients cannot spoof, so TCP is not rate limited; instead at
most ``max_tcp`` connections are served at once, at most ``max_tcp_per_client`` from one address
(further ones are closed at once), a connection idle for :data:`TCP_IDLE` seconds or open for
:data:`TCP_LIFETIME` seconds is closed, and one whose answers cannot be written within
``tcp_write_timeout`` seconds (a client that never reads) is reset.

Sharing the port: with ``reuse_port`` the UDP and TCP sockets are bound with SO_REUSEPORT so
that worker processes (:mod:`daprdockr.adapters.dns_workers`) can bind the same address and the
kernel spreads queries over all of them.  By default the kernel picks a socket by hashing the
client's address and port, so a few busy client sockets can land on one process;
:meth:`DnsServer.spread_queries` attaches a three-instruction classic BPF program to the group
that picks a member at random per datagram instead (DNS over UDP is stateless, and every
member answers from the same address).  With ``priority_socket`` the server binds a second UDP
socket into the group, and the program sends it every datagram from an allowed IPv4 network
(the rest spread over the other members), so a flood from outside cannot fill the allowed
clients' queue.  The first server still refuses a taken address: it
probe-binds a plain socket first, which fails if anyone (another agent, a resolver) holds it.
With listen port 0 (tests) the kernel picks the UDP port and TCP binds the same one; when TCP
has that port taken (a busy host's outgoing connections), another port is tried.
Every limit above (forwards, TCP connections, rate-limit buckets) is per process; the agent
divides the rate among the processes on one address.  The UDP socket's receive buffer is grown
to 4 MiB (or ``net.core.rmem_max``, with a warning), so a flood queued ahead of the rate limit
does not crowd out allowed clients' datagrams.

Bad input never raises out of the handler: an unexpected error is logged and the packet dropped
(counted in ``dropped``, like responses and packets without a header).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

from dnslib import QTYPE, RCODE, DNSError, DNSRecord

from daprdockr.adapters.dnsclient import query_tcp, query_udp
from daprdockr.adapters.sockets import (
    MAX_STEERED,
    attach_program,
    attach_random_spread,
    grow_receive_buffer,
    host_networks,
    probe_bind,
    resolv_conf_upstreams,
    steering_program,
)
from daprdockr.cancellation import within
from daprdockr.core.dns.encode import encode_answer
from daprdockr.core.dns.guard import (
    DEFAULT_LIMITS,
    Check,
    DnsLimits,
    ResponseRateLimiter,
    client_key,
    error_reply,
    outside_limit,
    precheck,
    reaches_self,
    truncated_reply,
    udp_limit,
)
from daprdockr.core.dns.stats import DnsStats
from daprdockr.core.dns.wire import Address, parse_question
from daprdockr.core.dns.zone import RR as ZoneRR
from daprdockr.core.dns.zone import Answer, Zone
from daprdockr.core.names import ServiceName
from daprdockr.core.routing import changed_specs
from daprdockr.core.state import ClusterState
from daprdockr.errors import DaprDockrError

log = logging.getLogger(__name__)

MAX_CACHE = 50_000
MAX_ROTATIONS = 8
MAX_CLIENTS = 4096  # client verdicts kept (inside ``allow``, or the rate-limit key)
TCP_IDLE = 10.0
TCP_LIFETIME = 120.0  # seconds a TCP connection may stay open, however busy
PORT_ATTEMPTS = 20  # listen port 0: tries to find a port free for both UDP and TCP
CAP_WARN_EVERY = 60.0  # seconds between warnings that the forward cap is reached
RECEIVE_BUFFER = 4 << 20  # bytes asked for the UDP socket's receive buffer (net.core.rmem_max caps it)


class _Token:
    """An owner's mark on its cached answers: dead once the owner changed (then they are misses)."""

    __slots__ = ("live",)

    def __init__(self) -> None:
        self.live = True


Owner = tuple[str, str] | ServiceName | None  # ("group", name), a service, None: volatile


@dataclass(slots=True)
class _Cached:
    """Pre-encoded answers (without the 2-byte id) for one question; served round robin.

    A rotation is encoded the first time it is served (``build``; None once all are), so that
    one query costs one encoding, however many rotations its answer has.
    """

    variants: list[bytes | None]
    next: int
    rcode: str
    token: _Token
    build: Callable[[int], bytes] | None = None
    hits: int = 0

    def variant(self, i: int) -> bytes:
        wire = self.variants[i]
        if wire is None:
            assert self.build is not None
            wire = self.variants[i] = self.build(i)
            if None not in self.variants:
                self.build = None  # (frees the records it held)
        return wire


class DnsServer:
    """Authoritative for ``<domain>.``, forwarder for the rest.  UDP and TCP on one port, within
    ``limits`` (:class:`~daprdockr.core.dns.guard.DnsLimits`)."""

    def __init__(
        self,
        *,
        listen: Address,
        upstreams: Sequence[Address] | None = None,
        domain: str = "container",
        ttl: int = 5,
        forward_timeout: float = 2.0,
        reuse_port: bool = False,
        probe: bool = True,
        limits: DnsLimits = DEFAULT_LIMITS,
        siblings: Sequence[Address] = (),
        priority_socket: bool = False,
    ) -> None:
        self.listen = listen
        self.siblings = tuple(siblings)  # the agent's other DNS listeners: forwarding there is a loop too
        self.reuse_port = reuse_port or priority_socket
        self.priority_socket = priority_socket  # a second UDP socket for allowed clients (steer_queries)
        self.probe = probe
        self.domain = domain
        self._domain_labels = len(domain.strip(".").split("."))
        self.ttl = ttl
        self.forward_timeout = forward_timeout
        self.limits = limits
        self.allow = limits.allow  # (read per datagram)
        self._limiter = ResponseRateLimiter(limits.rrl) if limits.rrl is not None else None
        self._inside: set[str] = set()  # client addresses known to be inside ``allow``
        self._outside: dict[str, str] = {}  # other client addresses -> their rate-limit key
        self._forwarding = 0
        self._cap_warned = -CAP_WARN_EVERY
        self._tcp_open = 0
        self._tcp_by_client: dict[str, int] = {}  # open TCP connections per client address
        self._upstreams_given = list(upstreams) if upstreams is not None else None
        self.upstreams: list[Address] = []
        self._state = ClusterState()
        self._zone: Zone | None = None
        self.stats = DnsStats()
        self.port = listen[1]
        self.receive_buffer = 0  # bytes, as the kernel reports it once bound
        self._cache: dict[bytes, _Cached] = {}
        self._tokens: dict[Owner, _Token] = {None: _Token()}  # each owner's live token
        self._exact_udp: dict[bytes, _Cached] = {}
        self._exact_tcp: dict[bytes, _Cached] = {}
        self._answers_by_cache: dict[str, int] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_priority: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind UDP, then TCP on the same port; with port 0 the kernel picks it (retried if TCP has it)."""
        attempts = PORT_ATTEMPTS if self.listen[1] == 0 else 1
        for attempt in range(1, attempts + 1):
            try:
                await self._bind()
                break
            except OSError as exc:
                await self.stop()
                if attempt < attempts and exc.errno == errno.EADDRINUSE:
                    continue  # the UDP port the kernel chose is taken for TCP: another one
                raise DaprDockrError(
                    f"DNS server cannot listen on {self.listen[0]}:{self.listen[1]}: {exc}"
                ) from exc
        candidates = self._upstreams_given if self._upstreams_given is not None else resolv_conf_upstreams()
        local = host_networks()
        self.upstreams = []
        ours = ((self.listen[0], self.port), *self.siblings)
        for upstream in candidates:
            if any(reaches_self(upstream, listen=addr, local=local) for addr in ours):
                log.warning("DNS upstream %s:%d is this agent's own DNS server (listening on %s); not forwarding "
                            "to it", upstream[0], upstream[1], ", ".join(f"{a}:{p}" for a, p in ours))
            else:
                self.upstreams.append(upstream)
        log.info("DNS on %s:%d for .%s, upstreams %s", self.listen[0], self.port, self.domain, self.upstreams)

    async def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if self.reuse_port and self.probe and self.listen[1]:
            probe_bind(self.listen)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=self.listen, reuse_port=self.reuse_port or None
        )
        self._udp = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        # a flood queues in the kernel before any rate limit can act: a deep queue keeps it from
        # crowding out the allowed clients' datagrams (the default is ~200 KiB, ~300 queries)
        self.receive_buffer = grow_receive_buffer(transport.get_extra_info("socket"), want=RECEIVE_BUFFER)
        if self.priority_socket and ":" not in self.listen[0]:  # (IPv4: the steering reads an IPv4 source)
            self._udp_priority, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.listen[0], self.port), reuse_port=True)
            grow_receive_buffer(self._udp_priority.get_extra_info("socket"), want=RECEIVE_BUFFER)
        self._tcp = await asyncio.start_server(
            self._serve_tcp, self.listen[0], self.port, reuse_port=self.reuse_port or None
        )

    async def stop(self) -> None:
        closing: list[asyncio.Future[None]] = []
        for udp in (self._udp, self._udp_priority):
            if udp is not None:
                udp.close()
                protocol = udp.get_protocol()
                if isinstance(protocol, _UdpProtocol):
                    closing.append(protocol.closed)
        self._udp = self._udp_priority = None
        with contextlib.suppress(TimeoutError):  # (the port is free once its sockets are closed)
            await within(asyncio.gather(*closing), 2)
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await within(self._tcp.wait_closed(), 2)
            self._tcp = None
        for task in list(self._tasks):
            task.cancel()

    @property
    def tcp_connections(self) -> int:
        """TCP connections being served now."""
        return self._tcp_open

    @property
    def zone(self) -> Zone:
        """The zone of the last state, brought up to it on the first query that needs it after a
        change (built once, then updated per changed service)."""
        if self._zone is None:
            self._zone = Zone(self._state, domain=self.domain, ttl=self.ttl)
        else:
            self._zone.update(self._state)
        return self._zone

    def spread_queries(self, *, members: int) -> bool:
        """Spread datagrams over the ``members`` sockets of our SO_REUSEPORT group (this server's
        first socket and the workers'), at random per datagram; with a priority socket (it counts
        too), datagrams from allowed IPv4 clients go to it alone, so a flood from elsewhere cannot
        fill its queue.  Returns False (and the kernel keeps hashing by client address) if it
        refuses the program."""
        if self._udp is None:
            return False
        total = members + (self._udp_priority is not None)
        steered = [net for net in self.allow if isinstance(net, IPv4Network)]
        if total < 2:
            return False
        fd = self._udp.get_extra_info("socket").fileno()
        try:
            with socket.socket(fileno=os.dup(fd)) as sock:
                if self._udp_priority is not None and 0 < len(steered) <= MAX_STEERED:
                    # (index 1: the priority socket was bound second, before any worker)
                    attach_program(sock, steering_program(members=total, priority=1, networks=steered))
                else:
                    attach_random_spread(sock, total)
        except OSError as exc:
            log.warning("cannot spread DNS queries evenly (%s); the kernel hashes by client address", exc)
            return False
        return True

    def update(self, state: ClusterState) -> None:
        """Take ``state`` and end the cached answers of the services that changed, of their
        groups, and the volatile ones (atomic for the loop; O(1) per changed service).

        The zone is updated lazily: a burst of state changes with no query in between (a
        service scaling up) costs no zone work at all, and then only the changed services'.
        """
        old, self._state = self._state, state
        if old is state:
            return
        tokens = self._tokens
        for name in changed_specs(old, state):
            for owner in (name, ("group", name.group)):
                token = tokens.pop(owner, None)
                if token is not None:
                    token.live = False
        tokens[None].live = False
        tokens[None] = _Token()

    def _fold_hits(self) -> None:
        """Add the per-entry hit counts of the cache being dropped to the rcode counters."""
        for entry in self._cache.values():
            if entry.hits:
                self.stats.count(entry.rcode, entry.hits)
                entry.hits = 0

    def answer_counts(self) -> dict[str, int]:
        """Answers sent by rcode (slow-path answers plus cache hits so far)."""
        self._fold_hits()
        return dict(self.stats.answers)

    def stats_snapshot(self) -> DnsStats:
        """A copy of the counters with every cache hit folded into ``answers``."""
        s = self.stats
        return DnsStats(queries=s.queries, cache_hits=s.cache_hits, forwarded=s.forwarded, dropped=s.dropped,
                        limited=s.limited, answers=self.answer_counts())

    # ------------------------------------------------------------------ transports
    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _client_key(self, host: str) -> str:
        """``""`` if ``host`` is inside ``allow``, else its rate-limit key; cached per address."""
        if host in self._inside:
            return ""
        key = self._outside.get(host)
        if key is None:
            key = client_key(host, allow=self.allow)
            known: set[str] | dict[str, str] = self._outside if key else self._inside
            if len(known) >= MAX_CLIENTS:
                known.clear()  # in place: the UDP protocol holds the set
            if key:
                self._outside[host] = key
            else:
                self._inside.add(host)
        return key

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else ""
        mine = self._tcp_by_client.get(client, 0)
        if self._tcp_open >= self.limits.max_tcp or mine >= self.limits.max_tcp_per_client:
            log.debug("DNS: %d TCP connections open (%d from %s); closing a new one", self._tcp_open, mine, client)
            writer.close()
            return
        self._tcp_open += 1
        self._tcp_by_client[client] = mine + 1
        stuck = False
        ends = asyncio.get_running_loop().time() + TCP_LIFETIME
        try:
            while True:
                left = ends - asyncio.get_running_loop().time()
                if left <= 0:
                    break  # a connection gets a bounded life: a few clients cannot hold every slot
                head = await within(reader.readexactly(2), min(TCP_IDLE, left))
                data = await within(reader.readexactly(struct.unpack("!H", head)[0]), TCP_IDLE)
                reply = await self.handle(data, tcp=True, client=client)
                if reply is not None:
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    try:
                        await within(writer.drain(), self.limits.tcp_write_timeout)
                    except TimeoutError:
                        log.debug("DNS TCP client %s does not read its answers; resetting", client)
                        stuck = True
                        break
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:
            log.exception("DNS TCP handler failed")
        finally:
            self._tcp_open -= 1
            if self._tcp_by_client[client] <= 1:
                del self._tcp_by_client[client]
            else:
                self._tcp_by_client[client] -= 1
            if stuck:
                writer.transport.abort()  # close() would wait to flush what the client never reads
            else:
                writer.close()

    # ------------------------------------------------------------------ answering
    def answer_fast(self, data: bytes, *, tcp: bool = False) -> bytes | None:
        """A cached answer for ``data`` with its id patched, or None (take the slow path).

        First by the exact packet bytes after the id (one slice and one dict lookup: the common
        case of clients repeating identical queries), then by the parsed question (clients that
        vary EDNS options such as cookies).
        """
        self.stats.queries += 1
        if type(data) is not bytes:
            data = bytes(data)
        exact = self._exact_udp if not tcp else self._exact_tcp
        entry = exact.get(data[2:])
        if entry is None or not entry.token.live:
            parsed = parse_question(data)
            if parsed is None:
                return None
            entry = self._cache.get(parsed[0] + (b"T" if tcp else b"U"))
            if entry is None or not entry.token.live:
                return None
            if len(exact) < MAX_CACHE or data[2:] in exact:
                exact[data[2:]] = entry
        self.stats.cache_hits += 1
        i = entry.next
        entry.next = (i + 1) % len(entry.variants)
        entry.hits += 1
        return data[:2] + entry.variant(i)

    async def answer_slow(self, data: bytes, *, tcp: bool = False, client: str | None = None) -> bytes | None:
        """Precheck, full parse: answer in-zone (and cache it), forward, or answer an error.  Never raises.

        ``client`` is the sender's address (recursion only inside ``allow``); None means an
        in-process caller, which may recurse.
        """
        try:
            return await self._answer_slow(bytes(data), tcp=tcp, client=client)
        except Exception:
            log.exception("DNS handler failed on a %d-byte packet", len(data))
            self.stats.dropped += 1
            return None

    async def handle(self, data: bytes, *, tcp: bool = False, client: str | None = None) -> bytes | None:
        """The answer to one query: from the cache, else the slow path (what TCP does per message)."""
        reply = self.answer_fast(data, tcp=tcp)
        if reply is None:
            reply = await self.answer_slow(data, tcp=tcp, client=client)
        return reply

    def _error(self, req: DNSRecord, rcode: int) -> bytes:
        """An error answer echoing the parsed query's question."""
        self.stats.count(RCODE[rcode])
        reply = req.reply(ra=1 if self.upstreams else 0, aa=0)
        reply.header.rcode = rcode
        reply.header.ad = 0
        return bytes(reply.pack())

    def _header_error(self, data: bytes, rcode: int) -> bytes | None:
        """A header-only error answer (the query did not pass the precheck or the parse)."""
        self.stats.count(RCODE[rcode])
        return error_reply(data, rcode, ra=bool(self.upstreams))

    async def _answer_slow(self, data: bytes, *, tcp: bool, client: str | None) -> bytes | None:
        check = precheck(data, tcp=tcp)
        if check.drop:
            self.stats.dropped += 1  # no header, or a response rather than a query (no reflection)
            return None
        if check.rcode:
            return self._header_error(data, check.rcode)
        try:
            req = DNSRecord.parse(data)
        except (DNSError, Exception):  # dnslib raises assorted errors on garbage (e.g. non-UTF-8 labels)
            return self._header_error(data, RCODE.FORMERR)
        q = req.questions[0]
        qname = str(q.qname)
        if not self.zone.in_zone(qname):
            if client is not None and self._client_key(client):
                return self._error(req, RCODE.REFUSED)  # no recursion outside ``allow``
            return await self._forward(req, data, check, tcp=tcp)
        if q.qclass != 1:
            return self._error(req, RCODE.REFUSED)
        return self._answer_zone(req, data, tcp=tcp)

    def _answer_zone(self, req: DNSRecord, data: bytes, *, tcp: bool) -> bytes:
        q = req.questions[0]
        qtype = QTYPE.get(q.qtype, str(q.qtype))
        edns = next((ar for ar in req.ar if ar.rtype == QTYPE.OPT), None)
        limit = 65535 if tcp else udp_limit(max(512, edns.edns_len) if edns is not None else 0)
        qname = tuple(q.qname.label)
        ra = bool(self.upstreams)
        rotations: list[tuple[ZoneRR, ...]] = [()]
        if qtype == "ANY":
            ans = Answer(rcode="NOERROR")
        else:
            ans = self.zone.lookup(str(q.qname), qtype)
            count = min(len(ans.answers), MAX_ROTATIONS) or 1
            rotations = [ans.answers[i:] + ans.answers[:i] for i in range(count)]
        rcode = getattr(RCODE, ans.rcode)

        def build(i: int) -> bytes:
            """Rotation ``i`` on the wire, without the id (TC=1 and no records if over ``limit``)."""
            return encode_answer(
                query=data, qname=qname, qtype=q.qtype, rcode=rcode, ra=ra, answers=rotations[i],
                authority=ans.authority, additional=ans.additional,
                rfc8482_ttl=self.ttl if qtype == "ANY" else None, edns=edns is not None, limit=limit,
            )[2:]

        first = build(0)
        # Every rotation holds the same records, so when the first is truncated they all are:
        # then one variant serves them all, and none of the other rotations is ever encoded.
        count = 1 if first[0] & 0x02 else len(rotations)
        owner = self._owner(qname) if ans.answers else None  # (negative answers carry the SOA's serial)
        token = self._tokens.get(owner) or self._tokens.setdefault(owner, _Token())
        entry = _Cached(variants=[first] + [None] * (count - 1), next=1 % count, rcode=RCODE[rcode], token=token,
                        build=build if count > 1 else None)
        self.stats.count(RCODE[rcode])
        parsed = parse_question(data)
        if parsed is not None:
            if len(self._cache) >= MAX_CACHE:
                self._fold_hits()
                self._cache, self._exact_udp, self._exact_tcp = {}, {}, {}
            key = parsed[0] + (b"T" if tcp else b"U")
            replaced = self._cache.get(key)
            if replaced is not None and replaced.hits:  # (a dead entry's hits still count)
                self.stats.count(replaced.rcode, replaced.hits)
                replaced.hits = 0
            self._cache[key] = entry
        return data[:2] + first

    def _owner(self, qname: tuple[bytes, ...]) -> Owner:
        """Whose change ends a positive answer for ``qname`` (labels, the domain's included): its
        service (``[<n>.|_<port>._<proto>.|<port>.<proto>.<n>.]<service>.<group>``), its group, or
        None (the apex)."""
        labels = [label.decode(errors="replace").lower() for label in qname[:len(qname) - self._domain_labels]]
        if not labels:
            return None
        if len(labels) == 1:
            return ("group", labels[0])
        return ServiceName(group=labels[-1], service=labels[-2])

    async def _forward(self, req: DNSRecord, data: bytes, check: Check, *, tcp: bool) -> bytes:
        if self._forwarding >= self.limits.max_forwards:
            now = time.monotonic()
            if now - self._cap_warned >= CAP_WARN_EVERY:
                self._cap_warned = now
                log.warning("DNS: %d forwards in flight (the cap; a forwarding loop?): answering SERVFAIL",
                            self._forwarding)
            return self._error(req, RCODE.SERVFAIL)
        self.stats.forwarded += 1
        self._forwarding += 1
        try:
            reply = await self._ask_upstreams(data, tcp=tcp)
        finally:
            self._forwarding -= 1
        if reply is None:
            return self._error(req, RCODE.SERVFAIL)
        rcode = reply[3] & 0x0F
        if not tcp and len(reply) > udp_limit(check.edns):  # never more over UDP than the client takes
            reply = truncated_reply(data, qend=check.qend, rcode=rcode, ra=True, edns=bool(check.edns))
        self.stats.count(RCODE.get(rcode, str(rcode)))
        return reply

    async def _ask_upstreams(self, data: bytes, *, tcp: bool) -> bytes | None:
        """The first upstream answer to ``data`` (same id, a response), or None.  A SERVFAIL or
        REFUSED answer moves on to the next upstream, as a stub resolver would (it is returned
        only if no other upstream answers better)."""
        fallback: bytes | None = None
        for upstream in self.upstreams:
            try:
                if tcp:
                    reply = await within(query_tcp(upstream, data), self.forward_timeout)
                else:
                    reply = await within(query_udp(upstream, data), self.forward_timeout)
                    if len(reply) > 2 and reply[2] & 0x02:  # truncated upstream: retry over TCP
                        with contextlib.suppress(Exception):
                            reply = await within(query_tcp(upstream, data), self.forward_timeout)
                if len(reply) < 12 or reply[:2] != data[:2] or not reply[2] & 0x80:
                    continue
                if reply[3] & 0x0F in (RCODE.SERVFAIL, RCODE.REFUSED):
                    fallback = fallback or bytes(reply)
                    continue
                return bytes(reply)
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                log.debug("upstream %s:%d failed: %r", upstream[0], upstream[1], exc)
        return fallback


def capped(query: bytes, reply: bytes) -> bytes:
    """``reply`` as a client outside ``allow`` gets it over UDP: as it is within
    :func:`~daprdockr.core.dns.guard.outside_limit` of ``query``, else TC=1 with only the question
    (its rcode and RA kept), which a real client retries over TCP."""
    if len(reply) <= outside_limit(len(query)):
        return reply
    check = precheck(query, tcp=False)
    rcode, ra = reply[3] & 0x0F, bool(reply[3] & 0x80)
    if check.drop or check.rcode:
        return error_reply(query, rcode, ra=ra) or b""
    return truncated_reply(query, qend=check.qend, rcode=rcode, ra=ra, edns=bool(check.edns))


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.inside = server._inside  # client addresses known to be inside ``allow``
        self.transport: asyncio.DatagramTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        outside = addr[0] not in self.inside  # one set lookup when allowed
        if outside:
            outside = self.server._client_key(addr[0]) != ""  # (files a new address as inside or outside)
            if outside and not self._admit(data, addr):
                return
        reply = self.server.answer_fast(data)
        if reply is not None:
            assert self.transport is not None
            self.transport.sendto(capped(data, reply) if outside else reply, addr)
            return
        self.server._spawn(self._slow(data, addr, outside=outside))

    def _admit(self, data: bytes, addr: Address) -> bool:
        """Rate limit a client outside ``allow``: True to answer; else slip (TC=1) or drop."""
        server = self.server
        key = server._client_key(addr[0])
        if server._limiter is None:
            return True
        verdict = server._limiter.check(key, now=time.monotonic())
        if verdict == "send":
            return True
        server.stats.queries += 1
        server.stats.limited += 1
        if verdict == "slip" and self.transport is not None:
            check = precheck(data, tcp=False)
            if not check.drop and not check.rcode:
                self.transport.sendto(truncated_reply(data, qend=check.qend, rcode=0, ra=bool(server.upstreams),
                                                      edns=bool(check.edns)), addr)
        return False

    async def _slow(self, data: bytes, addr: Address, *, outside: bool) -> None:
        reply = await self.server.answer_slow(data, client=addr[0])
        if reply is not None and self.transport is not None:
            self.transport.sendto(capped(data, reply) if outside else reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("DNS UDP error: %s", exc)


