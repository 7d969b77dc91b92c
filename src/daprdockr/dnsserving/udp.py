"""The DNS server's UDP side: the datagram protocol, its rate limit and the outside clients' bound.

Per datagram: one set lookup of the client's address (inside ``allow``: never limited), the
cached answer if there is one, else the slow path in a task.  A client outside ``allow`` is rate
limited (:class:`~daprdockr.dnsserving.clients.Clients`) and gets at most
:func:`~daprdockr.core.dns.guard.outside_limit` of its query (:func:`capped`), so a spoofed
source gains no amplification worth having.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from daprdockr.core.dns.guard import error_reply, outside_limit, precheck, truncated_reply
from daprdockr.core.dns.stats import DnsStats
from daprdockr.core.dns.wire import Address
from daprdockr.dnsserving.clients import Clients

log = logging.getLogger(__name__)


class Responder(Protocol):
    """What the UDP protocol needs of the server it serves."""

    clients: Clients
    stats: DnsStats
    upstreams: list[Address]

    def answer_fast(self, data: bytes, *, tcp: bool = ...) -> bytes | None: ...

    async def answer_slow(self, data: bytes, *, tcp: bool = ..., client: str | None = ...) -> bytes | None: ...

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...


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


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: Responder) -> None:
        self.server = server
        self.inside = server.clients.inside  # client addresses known to be inside ``allow``
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
            outside = self.server.clients.key(addr[0]) != ""  # (files a new address as inside or outside)
            if outside and not self._admit(data, addr):
                return
        reply = self.server.answer_fast(data)
        if reply is not None:
            assert self.transport is not None
            self.transport.sendto(capped(data, reply) if outside else reply, addr)
            return
        self.server.spawn(self._slow(data, addr, outside=outside))

    def _admit(self, data: bytes, addr: Address) -> bool:
        """Rate limit a client outside ``allow``: True to answer; else slip (TC=1) or drop."""
        server = self.server
        key = server.clients.key(addr[0])
        limiter = server.clients.limiter
        if limiter is None:
            return True
        verdict = limiter.check(key, now=time.monotonic())
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
