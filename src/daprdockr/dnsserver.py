"""DNS server for the ``.container`` zone (asyncio UDP + TCP, dnslib), forwarding everything else.

Hot path.  Most queries are one question with at most an EDNS0 OPT record.  Such a query's
header and question are parsed by hand (no dnslib), and the answer comes from a cache of
pre-encoded wire responses keyed on the raw question bytes, the RD bit, the EDNS buffer size and
the transport; only the 2-byte id is patched per query.  Names with several records keep up to
eight rotations that are served in turn (round robin); each is encoded the first time it is
served, so a query costs at most one encoding, and an answer too large for UDP (truncated, so
the same for every rotation) keeps one.  The cache holds only in-zone answers, each under its
owner (:mod:`daprdockr.dnsserving.cache`): the service its name belongs to, the group, or
*volatile*.  :meth:`DnsServer.update` ends, in O(1) each, the answers of the services that
changed and of their groups and every volatile answer, so answers follow etcd within one watch
event and an event costs what it changed, not the cache's size.  The only other per-datagram
work is one set lookup of the client's address (:mod:`daprdockr.dnsserving.clients`).

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
its records) and cached, or the query is forwarded to the upstream resolvers
(:mod:`daprdockr.dnsserving.forwarding`); SERVFAIL when none answers.  ANY gets the RFC 8482
minimal answer (one HINFO "RFC8482").  UDP answers larger than 512 bytes (or the client's EDNS0
buffer size, capped at the 1232 we advertise, :data:`daprdockr.core.dns.guard.EDNS_SIZE`) are
truncated with the TC bit so that the client retries over TCP; that includes forwarded answers.
A client outside ``allow`` gets REFUSED for names outside the zone, is rate limited, and gets
at most 3 times its query over UDP (:mod:`daprdockr.dnsserving.udp`); TCP connections are
bounded (:mod:`daprdockr.dnsserving.tcp`).

An upstream that would reach this very server, or one of the agent's other DNS listeners
(``siblings``: the loopback listener beside the advertise address), is dropped at start with a
warning: same port, and its address (0.0.0.0 and :: meaning loopback, IPv4-mapped IPv6 as IPv4)
is that listen address, or any address the host owns (from ``/proc/net/fib_trie`` and
``/proc/net/if_inet6``, loopback always) for a wildcard.

Sharing the port with worker processes (SO_REUSEPORT, queries spread by BPF, a priority socket
for allowed clients): :mod:`daprdockr.dnsserving.listeners`.  Every limit (forwards, TCP
connections, rate-limit buckets) is per process; the agent divides the rate among the processes
on one address.

Bad input never raises out of the handler: an unexpected error is logged and the packet dropped
(counted in ``dropped``, like responses and packets without a header).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

from dnslib import QTYPE, RCODE, DNSError, DNSRecord

from daprdockr.adapters.sockets import host_networks, resolv_conf_upstreams
from daprdockr.core.dns.encode import encode_answer
from daprdockr.core.dns.guard import DEFAULT_LIMITS, DnsLimits, error_reply, precheck, reaches_self, udp_limit
from daprdockr.core.dns.stats import DnsStats
from daprdockr.core.dns.wire import Address, parse_question
from daprdockr.core.dns.zone import RR as ZoneRR
from daprdockr.core.dns.zone import Answer, Zone
from daprdockr.core.routing import changed_specs
from daprdockr.core.state import ClusterState
from daprdockr.dnsserving.cache import MAX_CACHE, MAX_ROTATIONS, Cached, Owner, Token, owner_of
from daprdockr.dnsserving.clients import Clients
from daprdockr.dnsserving.forwarding import Forwarder
from daprdockr.dnsserving.listeners import Listeners
from daprdockr.dnsserving.tcp import TcpServing
from daprdockr.dnsserving.udp import UdpProtocol

log = logging.getLogger(__name__)


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
        self.domain = domain
        self._domain_labels = len(domain.strip(".").split("."))
        self.ttl = ttl
        self.limits = limits
        self.allow = limits.allow
        self.clients = Clients(allow=limits.allow, rrl=limits.rrl)
        self._upstreams_given = list(upstreams) if upstreams is not None else None
        self.upstreams: list[Address] = []
        self._state = ClusterState()
        self._zone: Zone | None = None
        self.stats = DnsStats()
        self._forwarder = Forwarder(timeout=forward_timeout, max_forwards=limits.max_forwards, stats=self.stats)
        self._listeners = Listeners(listen=listen, reuse_port=reuse_port, probe=probe, priority_socket=priority_socket)
        self._tcp = TcpServing(limits=limits, handle=self.handle)
        self._cache: dict[bytes, Cached] = {}
        self._tokens: dict[Owner, Token] = {None: Token()}  # each owner's live token
        self._exact_udp: dict[bytes, Cached] = {}
        self._exact_tcp: dict[bytes, Cached] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind UDP, then TCP on the same port; with port 0 the kernel picks it (retried if TCP has it)."""
        await self._listeners.bind(datagrams=lambda: UdpProtocol(self), streams=self._tcp.serve)
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

    async def stop(self) -> None:
        await self._listeners.close()
        for task in list(self._tasks):
            task.cancel()

    @property
    def port(self) -> int:
        """The port listened on (the kernel's choice for listen port 0, once bound)."""
        return self._listeners.port

    @property
    def receive_buffer(self) -> int:
        """The UDP socket's receive buffer in bytes, as the kernel reports it once bound."""
        return self._listeners.receive_buffer

    @property
    def tcp_connections(self) -> int:
        """TCP connections being served now."""
        return self._tcp.open

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
        """Spread datagrams over the ``members`` sockets of our SO_REUSEPORT group at random, those
        of allowed IPv4 clients to the priority socket if there is one
        (:meth:`~daprdockr.dnsserving.listeners.Listeners.spread`); False if the kernel refuses."""
        return self._listeners.spread(members=members, allow=self.allow)

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
        tokens[None] = Token()

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

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task of this server (cancelled by :meth:`stop`)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
            if client is not None and self.clients.key(client):
                return self._error(req, RCODE.REFUSED)  # no recursion outside ``allow``
            reply = await self._forwarder.forward(data, check, upstreams=self.upstreams, tcp=tcp)
            return reply if reply is not None else self._error(req, RCODE.SERVFAIL)
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
        # (negative answers carry the SOA's serial: volatile)
        owner = owner_of(qname, domain_labels=self._domain_labels) if ans.answers else None
        token = self._tokens.get(owner) or self._tokens.setdefault(owner, Token())
        entry = Cached(variants=[first] + [None] * (count - 1), next=1 % count, rcode=RCODE[rcode], token=token,
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
