"""The DNS server's TCP side: length-prefixed queries on a connection, within bounds.

TCP clients cannot spoof their address, so TCP is not rate limited; instead at most ``max_tcp``
connections are served at once, at most ``max_tcp_per_client`` from one address (further ones are
closed at once), a connection idle for :data:`TCP_IDLE` seconds or open for :data:`TCP_LIFETIME`
seconds is closed, and one whose answers cannot be written within ``tcp_write_timeout`` seconds (a
client that never reads) is reset (:class:`~daprdockr.core.dns.guard.DnsLimits`).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Protocol

from daprdockr.cancellation import within
from daprdockr.core.dns.guard import DnsLimits

log = logging.getLogger(__name__)

TCP_IDLE = 10.0
TCP_LIFETIME = 120.0  # seconds a TCP connection may stay open, however busy


class Handler(Protocol):
    """The answer to one query, or None (no answer)."""

    async def __call__(self, data: bytes, *, tcp: bool = ..., client: str | None = ...) -> bytes | None: ...


class TcpServing:
    """Serves TCP connections with ``handle`` (as an :func:`asyncio.start_server` callback), within ``limits``."""

    def __init__(self, *, limits: DnsLimits, handle: Handler) -> None:
        self.limits = limits
        self.handle = handle
        self.open = 0  # connections being served now
        self.by_client: dict[str, int] = {}  # open connections per client address

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else ""
        mine = self.by_client.get(client, 0)
        if self.open >= self.limits.max_tcp or mine >= self.limits.max_tcp_per_client:
            log.debug("DNS: %d TCP connections open (%d from %s); closing a new one", self.open, mine, client)
            writer.close()
            return
        self.open += 1
        self.by_client[client] = mine + 1
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
            self.open -= 1
            if self.by_client[client] <= 1:
                del self.by_client[client]
            else:
                self.by_client[client] -= 1
            if stuck:
                writer.transport.abort()  # close() would wait to flush what the client never reads
            else:
                writer.close()
