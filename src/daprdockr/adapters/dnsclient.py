"""Queries to upstream resolvers (one UDP datagram, or one TCP exchange), for forwarding."""

from __future__ import annotations

import asyncio
import struct

from daprdockr.core.dns.wire import Address


class _OneShot(asyncio.DatagramProtocol):
    def __init__(self, fut: asyncio.Future[bytes]) -> None:
        self.fut = fut

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if not self.fut.done():
            self.fut.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.fut.done():
            self.fut.set_exception(exc)


async def query_udp(upstream: Address, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bytes] = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(lambda: _OneShot(fut), remote_addr=upstream)
    try:
        transport.sendto(data)
        return await fut
    finally:
        transport.close()


async def query_tcp(upstream: Address, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*upstream)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        return await reader.readexactly(size)
    finally:
        writer.close()
