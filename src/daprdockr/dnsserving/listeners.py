"""The DNS server's sockets: UDP and TCP on one port, shared with its workers through SO_REUSEPORT.

With ``reuse_port`` the UDP and TCP sockets are bound with SO_REUSEPORT so that worker processes
(:mod:`daprdockr.dnsserving.workers`) can bind the same address and the kernel spreads queries
over all of them.  By default the kernel picks a socket by hashing the client's address and port,
so a few busy client sockets can land on one process; :meth:`Listeners.spread` attaches a
three-instruction classic BPF program to the group that picks a member at random per datagram
instead (DNS over UDP is stateless, and every member answers from the same address).  With
``priority_socket`` a second UDP socket is bound into the group, and the program sends it every
datagram from an allowed IPv4 network (the rest spread over the other members), so a flood from
outside cannot fill the allowed clients' queue.  The first server still refuses a taken address:
it probe-binds a plain socket first, which fails if anyone (another agent, a resolver) holds it.
With listen port 0 (tests) the kernel picks the UDP port and TCP binds the same one; when TCP has
that port taken (a busy host's outgoing connections), another port is tried.  The UDP socket's
receive buffer is grown to :data:`RECEIVE_BUFFER` (or ``net.core.rmem_max``, with a warning), so
a flood queued ahead of the rate limit does not crowd out allowed clients' datagrams.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from ipaddress import IPv4Network

from daprdockr.adapters.sockets import (
    MAX_STEERED,
    attach_program,
    attach_random_spread,
    grow_receive_buffer,
    probe_bind,
    steering_program,
)
from daprdockr.cancellation import within
from daprdockr.core.dns.guard import Network
from daprdockr.core.dns.wire import Address
from daprdockr.dnsserving.udp import UdpProtocol
from daprdockr.errors import DaprDockrError

log = logging.getLogger(__name__)

PORT_ATTEMPTS = 20  # listen port 0: tries to find a port free for both UDP and TCP
RECEIVE_BUFFER = 4 << 20  # bytes asked for the UDP socket's receive buffer (net.core.rmem_max caps it)

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Listeners:
    """The UDP socket (and the priority one) and the TCP server of one DNS server, on one port."""

    def __init__(self, *, listen: Address, reuse_port: bool, probe: bool, priority_socket: bool) -> None:
        self.listen = listen
        self.reuse_port = reuse_port or priority_socket
        self.priority_socket = priority_socket  # a second UDP socket for allowed clients (spread)
        self.probe = probe
        self.port = listen[1]
        self.receive_buffer = 0  # bytes, as the kernel reports it once bound
        self.udp: asyncio.DatagramTransport | None = None
        self.udp_priority: asyncio.DatagramTransport | None = None
        self.tcp: asyncio.Server | None = None

    async def bind(self, *, datagrams: Callable[[], UdpProtocol], streams: StreamHandler) -> None:
        """Bind UDP, then TCP on the same port; with port 0 the kernel picks it (retried if TCP has it)."""
        attempts = PORT_ATTEMPTS if self.listen[1] == 0 else 1
        for attempt in range(1, attempts + 1):
            try:
                await self._bind(datagrams, streams)
                return
            except OSError as exc:
                await self.close()
                if attempt < attempts and exc.errno == errno.EADDRINUSE:
                    continue  # the UDP port the kernel chose is taken for TCP: another one
                raise DaprDockrError(
                    f"DNS server cannot listen on {self.listen[0]}:{self.listen[1]}: {exc}"
                ) from exc

    async def _bind(self, datagrams: Callable[[], UdpProtocol], streams: StreamHandler) -> None:
        loop = asyncio.get_running_loop()
        if self.reuse_port and self.probe and self.listen[1]:
            probe_bind(self.listen)
        transport, _ = await loop.create_datagram_endpoint(
            datagrams, local_addr=self.listen, reuse_port=self.reuse_port or None
        )
        self.udp = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        # a flood queues in the kernel before any rate limit can act: a deep queue keeps it from
        # crowding out the allowed clients' datagrams (the default is ~200 KiB, ~300 queries)
        self.receive_buffer = grow_receive_buffer(transport.get_extra_info("socket"), want=RECEIVE_BUFFER)
        if self.priority_socket and ":" not in self.listen[0]:  # (IPv4: the steering reads an IPv4 source)
            self.udp_priority, _ = await loop.create_datagram_endpoint(
                datagrams, local_addr=(self.listen[0], self.port), reuse_port=True)
            grow_receive_buffer(self.udp_priority.get_extra_info("socket"), want=RECEIVE_BUFFER)
        self.tcp = await asyncio.start_server(streams, self.listen[0], self.port, reuse_port=self.reuse_port or None)

    async def close(self) -> None:
        """Close the sockets and wait until they are (then the port is free)."""
        closing: list[asyncio.Future[None]] = []
        for udp in (self.udp, self.udp_priority):
            if udp is not None:
                udp.close()
                protocol = udp.get_protocol()
                if isinstance(protocol, UdpProtocol):
                    closing.append(protocol.closed)
        self.udp = self.udp_priority = None
        with contextlib.suppress(TimeoutError):  # (the port is free once its sockets are closed)
            await within(asyncio.gather(*closing), 2)
        if self.tcp is not None:
            self.tcp.close()
            with contextlib.suppress(Exception):
                await within(self.tcp.wait_closed(), 2)
            self.tcp = None

    def spread(self, *, members: int, allow: Sequence[Network]) -> bool:
        """Spread datagrams over the ``members`` sockets of our SO_REUSEPORT group (the first UDP
        socket and the workers'), at random per datagram; with a priority socket (it counts too),
        datagrams from ``allow``'s IPv4 networks go to it alone, so a flood from elsewhere cannot
        fill its queue.  Returns False (and the kernel keeps hashing by client address) if it
        refuses the program."""
        if self.udp is None:
            return False
        total = members + (self.udp_priority is not None)
        steered = [net for net in allow if isinstance(net, IPv4Network)]
        if total < 2:
            return False
        fd = self.udp.get_extra_info("socket").fileno()
        try:
            with socket.socket(fileno=os.dup(fd)) as sock:
                if self.udp_priority is not None and 0 < len(steered) <= MAX_STEERED:
                    # (index 1: the priority socket was bound second, before any worker)
                    attach_program(sock, steering_program(members=total, priority=1, networks=steered))
                else:
                    attach_random_spread(sock, total)
        except OSError as exc:
            log.warning("cannot spread DNS queries evenly (%s); the kernel hashes by client address", exc)
            return False
        return True
