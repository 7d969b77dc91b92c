"""The DNS server's forwarding of names outside its zone to the upstream resolvers, bounded.

A query is forwarded verbatim to the upstreams in order (UDP, or TCP for TCP clients and
truncated upstream replies), each with a timeout; a SERVFAIL or REFUSED from one upstream moves
on to the next, as a stub resolver does.  An answer larger than the UDP client takes goes back as
a TC=1 header with the question.  At most ``max_forwards`` forwards are in flight (each holds a
socket); beyond that the server answers SERVFAIL at once.  The cap also bounds a loop through
another server that forwards back to us, which no address check can see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from dnslib import RCODE

from daprdockr.adapters.dnsclient import query_tcp, query_udp
from daprdockr.cancellation import within
from daprdockr.core.dns.guard import Check, truncated_reply, udp_limit
from daprdockr.core.dns.stats import DnsStats
from daprdockr.core.dns.wire import Address

log = logging.getLogger(__name__)

CAP_WARN_EVERY = 60.0  # seconds between warnings that the forward cap is reached


class Forwarder:
    """Forwards queries to upstream resolvers, at most ``max_forwards`` at once, counted in ``stats``."""

    def __init__(self, *, timeout: float, max_forwards: int, stats: DnsStats) -> None:
        self.timeout = timeout
        self.max_forwards = max_forwards
        self.stats = stats
        self.in_flight = 0
        self._cap_warned = -CAP_WARN_EVERY

    async def forward(self, data: bytes, check: Check, *, upstreams: Sequence[Address], tcp: bool) -> bytes | None:
        """The upstream answer to ``data`` as the client gets it (counted by rcode), or None: the
        cap is reached or no upstream answered (the server answers SERVFAIL)."""
        if self.in_flight >= self.max_forwards:
            now = time.monotonic()
            if now - self._cap_warned >= CAP_WARN_EVERY:
                self._cap_warned = now
                log.warning("DNS: %d forwards in flight (the cap; a forwarding loop?): answering SERVFAIL",
                            self.in_flight)
            return None
        self.stats.forwarded += 1
        self.in_flight += 1
        try:
            reply = await self.ask(data, upstreams=upstreams, tcp=tcp)
        finally:
            self.in_flight -= 1
        if reply is None:
            return None
        rcode = reply[3] & 0x0F
        if not tcp and len(reply) > udp_limit(check.edns):  # never more over UDP than the client takes
            reply = truncated_reply(data, qend=check.qend, rcode=rcode, ra=True, edns=bool(check.edns))
        self.stats.count(RCODE.get(rcode, str(rcode)))
        return reply

    async def ask(self, data: bytes, *, upstreams: Sequence[Address], tcp: bool) -> bytes | None:
        """The first upstream answer to ``data`` (same id, a response), or None.  A SERVFAIL or
        REFUSED answer moves on to the next upstream, as a stub resolver would (it is returned
        only if no other upstream answers better)."""
        fallback: bytes | None = None
        for upstream in upstreams:
            try:
                if tcp:
                    reply = await within(query_tcp(upstream, data), self.timeout)
                else:
                    reply = await within(query_udp(upstream, data), self.timeout)
                    if len(reply) > 2 and reply[2] & 0x02:  # truncated upstream: retry over TCP
                        with contextlib.suppress(Exception):
                            reply = await within(query_tcp(upstream, data), self.timeout)
                if len(reply) < 12 or reply[:2] != data[:2] or not reply[2] & 0x80:
                    continue
                if reply[3] & 0x0F in (RCODE.SERVFAIL, RCODE.REFUSED):
                    fallback = fallback or bytes(reply)
                    continue
                return bytes(reply)
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                log.debug("upstream %s:%d failed: %r", upstream[0], upstream[1], exc)
        return fallback
