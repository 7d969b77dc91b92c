"""Hostile input to the DNS server (issue "Hostile input", DNS part): real sockets on loopback.

Forwarding loops and the in-flight bound, amplification through truncated upstream answers,
recursion only for allowed clients and response rate limiting for the others, the cheap
precheck of every packet (with a packet-level fuzz of the handling time), and TCP limits.
Outsiders are simulated on loopback: the client binds 127.0.0.77 and the server allows only
127.0.0.1/32.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import select
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from ipaddress import ip_network
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import pytest
from dnslib import QTYPE, RR, A, DNSHeader, DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daprdockr.core.dns.guard import DnsLimits, RrlPolicy
from daprdockr.dnsserver import DnsServer
from tests.support.procs import free_port
from tests.test_dnsserver import STATE, StubUpstream, addresses

OUTSIDER = "127.0.0.77"
ONLY_ONE = [ip_network("127.0.0.1/32")]
BUDGET = 5e-3  # max handling time of one packet (seconds of CPU)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.asynccontextmanager
async def fd_peak() -> AsyncIterator[list[int]]:
    """Sample this process's open fd count every millisecond; yields [peak] (updated)."""
    peak = [fd_count()]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], fd_count())
            await asyncio.sleep(0.001)

    task = asyncio.create_task(sample())
    try:
        yield peak
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        peak[0] = max(peak[0], fd_count())


def query(name: str, ident: int, *, qtype: str = "A", edns: int | None = None) -> bytes:
    q = dns.message.make_query(name, qtype, use_edns=edns is not None, payload=edns or 512)
    q.id = ident
    return q.to_wire()


async def burst(port: int, packets: list[bytes], *, source: str = "127.0.0.1", expect: int | None = None,
                quiet: float = 0.5) -> tuple[list[bytes], float]:
    """Send ``packets`` from one socket bound to ``source``; collect replies.

    Stops when ``expect`` replies came or none came for ``quiet`` seconds.  Returns the replies and
    the seconds from the first send to the last reply.
    """
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((source, 0))
        sock.setblocking(False)
        t0 = time.monotonic()
        last = t0
        for p in packets:
            await loop.sock_sendto(sock, p, ("127.0.0.1", port))
        replies: list[bytes] = []
        while expect is None or len(replies) < expect:
            try:
                replies.append(await asyncio.wait_for(loop.sock_recv(sock, 65535), quiet))
            except TimeoutError:
                break
            last = time.monotonic()
        return replies, last - t0


def rcode_of(reply: bytes) -> int:
    return reply[3] & 0x0F


async def started(**kwargs: Any) -> DnsServer:
    srv = DnsServer(**kwargs)
    await srv.start()
    srv.update(STATE)
    return srv


# ---------------------------------------------------------------------------------- 1. forwarding loops
@pytest.mark.parametrize(
    ("listen_host", "upstream_host"),
    [
        ("0.0.0.0", "127.0.0.2"),  # wildcard listen: any local address at our port is us
        ("127.0.0.1", "::ffff:127.0.0.1"),  # our address spelled as IPv4-mapped IPv6
    ],
)
async def test_self_forward_is_dropped_and_fds_stay_flat(
    listen_host: str, upstream_host: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port("127.0.0.1")
    with caplog.at_level(logging.WARNING, logger="daprdockr.dnsserver"):
        srv = await started(listen=(listen_host, port), upstreams=[(upstream_host, port)], forward_timeout=0.5)
    try:
        before = fd_count()
        async with fd_peak() as peak:
            replies, _ = await burst(port, [query(f"n{i}.example.test", i) for i in range(20)], expect=20)
            await asyncio.sleep(0.5)  # a loop would keep growing meanwhile
        print(f"fds: {before} before, peak {peak[0]}")
        assert peak[0] - before <= 4  # the client socket, nothing per query
        assert len(replies) == 20 and all(rcode_of(r) == dns.rcode.SERVFAIL for r in replies)
        assert srv.upstreams == []
        assert any(upstream_host in r.getMessage() for r in caplog.records)
    finally:
        await srv.stop()


async def test_legitimate_loopback_upstreams_are_kept() -> None:
    port = free_port("127.0.0.1")
    other = free_port("127.0.0.1")
    srv = DnsServer(listen=("127.0.0.1", port),
                    upstreams=[("127.0.0.53", 53), ("127.0.0.1", other), ("127.0.0.2", port), ("127.0.0.1", port)])
    await srv.start()  # no query: nothing is sent anywhere
    try:
        assert srv.upstreams == [("127.0.0.53", 53), ("127.0.0.1", other), ("127.0.0.2", port)]
    finally:
        await srv.stop()


async def test_loop_between_two_servers_is_bounded_by_the_cap() -> None:
    pa, pb = free_port("127.0.0.1"), free_port("127.0.0.1")
    while pb == pa:
        pb = free_port("127.0.0.1")
    cap = 8
    a = await started(listen=("127.0.0.1", pa), upstreams=[("127.0.0.1", pb)], limits=DnsLimits(max_forwards=cap),
                      forward_timeout=1.0)
    b = await started(listen=("127.0.0.1", pb), upstreams=[("127.0.0.1", pa)], limits=DnsLimits(max_forwards=cap),
                      forward_timeout=1.0)
    try:
        before = fd_count()
        async with fd_peak() as peak:
            replies, _ = await burst(pa, [query(f"n{i}.example.test", i) for i in range(20)], expect=20, quiet=1.5)
            await asyncio.sleep(0.3)
        print(f"fds: {before} before, peak {peak[0]}; forwarded a={a.stats.forwarded} b={b.stats.forwarded}")
        assert peak[0] - before <= 1 + 2 * cap + 4  # client socket + each server's in-flight forwards
        assert len(replies) == 20 and all(rcode_of(r) == dns.rcode.SERVFAIL for r in replies)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3
        while fd_count() > before:  # every forward socket is closed again
            assert loop.time() < deadline, (fd_count(), before)
            await asyncio.sleep(0.02)
    finally:
        await a.stop()
        await b.stop()


async def test_the_agents_two_listeners_never_forward_to_each_other() -> None:
    """Regression: with the advertise address plus a loopback listener (``--dns-listen auto`` on a
    non-loopback host) and both in resolv.conf, each listener dropped only itself as an upstream,
    so the two forwarded every outside name to each other until the in-flight cap (SERVFAIL after
    a loop of sockets).  Each listener now drops every address of the agent's DNS."""
    from daprdockr.agent.components import Dns
    from daprdockr.core.state import ClusterState

    port = free_port("127.0.0.11")
    while not _free_on("127.0.0.1", port):
        port = free_port("127.0.0.11")

    async def no_networks() -> list[str]:
        return []

    real = StubUpstream()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: real,
                                                                              local_addr=("127.0.0.1", 0))
    real_port = transport.get_extra_info("sockname")[1]
    dns_ = Dns(listen=("127.0.0.11", port), also=(("127.0.0.1", port),), ttl=5, workers=0, allow=(),
               upstreams=[("127.0.0.1", port), ("127.0.0.11", port), ("127.0.0.1", real_port)],
               container_networks=no_networks, state=ClusterState)
    await dns_.start()
    try:
        assert dns_.server is not None and dns_.server.upstreams == [("127.0.0.1", real_port)]
        assert [x.upstreams for x in dns_.extra] == [[("127.0.0.1", real_port)]]
        for listener in (("127.0.0.11", port), ("127.0.0.1", port)):
            r = await dns.asyncquery.udp(dns.message.make_query("www.example.test", "A"), listener[0],
                                         port=listener[1], timeout=2)
            assert r.rcode() == dns.rcode.NOERROR and addresses(r) == ["192.0.2.1"], r
        total = dns_.server.stats.forwarded + sum(x.stats.forwarded for x in dns_.extra)
        assert total == 2, f"{total} forwards for 2 queries: a loop between the listeners"
    finally:
        await dns_.stop()
        transport.close()


async def test_a_taken_loopback_address_does_not_stop_the_agents_dns(caplog: pytest.LogCaptureFixture) -> None:
    """The loopback listener beside the advertise address is best effort: when another resolver
    holds it, the agent's DNS still starts on its advertise address (a warning says so)."""
    from daprdockr.agent.components import Dns

    async def no_networks() -> list[str]:
        return []

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        taken = holder.getsockname()
        dns_ = Dns(listen=("127.0.0.11", 0), also=(taken,), ttl=5, workers=0, allow=(), upstreams=[],
                   container_networks=no_networks, state=lambda: STATE)
        with caplog.at_level(logging.WARNING, logger="daprdockr.agent.components"):
            await dns_.start()
        try:
            assert dns_.server is not None and dns_.extra == []
            assert any(f"127.0.0.1:{taken[1]} not started" in r.getMessage() for r in caplog.records)
            r = await dns.asyncquery.udp(dns.message.make_query("1.web.myapp.container", "A"), "127.0.0.11",
                                         port=dns_.server.port, timeout=2)
            assert addresses(r) == ["127.0.0.2"]
        finally:
            await dns_.stop()



def _free_on(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------------------- 2. amplification
class TruncatingUpstream(asyncio.DatagramProtocol):
    """Answers UDP with TC=1 and no records; its TCP side answers with ~30 KB."""

    RECORDS = 1900

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = DNSRecord.parse(data).reply()
        reply.header.tc = 1
        assert self.transport is not None
        self.transport.sendto(reply.pack(), addr)

    @classmethod
    async def serve_tcp(cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                req = DNSRecord.parse(await reader.readexactly(size))
                reply = req.reply()
                for i in range(cls.RECORDS):
                    reply.add_answer(RR(req.q.qname, rdata=A(f"10.0.{i // 250}.{i % 250}"), ttl=60))
                wire = reply.pack()
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def truncating_upstream() -> AsyncIterator[int]:
    """A :class:`TruncatingUpstream` on one port for UDP and TCP (127.0.0.1); yields the port."""
    loop = asyncio.get_running_loop()
    for _ in range(50):  # the UDP port's number may be taken for TCP (a client's ephemeral port): another
        transport, _ = await loop.create_datagram_endpoint(TruncatingUpstream, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        try:
            tcp = await asyncio.start_server(TruncatingUpstream.serve_tcp, "127.0.0.1", port)
            break
        except OSError:
            transport.close()
    else:
        raise AssertionError("no port free for both UDP and TCP in 50 tries")
    try:
        yield port
    finally:
        tcp.close()
        transport.close()


@pytest.fixture
async def truncating() -> AsyncIterator[int]:
    async with truncating_upstream() as port:
        yield port


async def test_truncated_upstream_answer_is_not_amplified(truncating: int) -> None:
    srv = await started(listen=("127.0.0.1", 0), upstreams=[("127.0.0.1", truncating)], forward_timeout=2.0)
    try:
        q = query("big.example.test", 7)
        (reply,), _ = await burst(srv.port, [q], expect=1, quiet=3)
        print(f"{len(q)}-byte query, {len(reply)}-byte UDP reply")
        assert len(reply) <= 512
        msg = DNSRecord.parse(reply)
        assert msg.header.id == 7 and msg.header.tc == 1 and msg.header.qr == 1
        assert str(msg.q.qname) == "big.example.test." and not msg.rr and not msg.auth
        (reply,), _ = await burst(srv.port, [query("big.example.test", 8, edns=4096)], expect=1, quiet=3)
        assert len(reply) <= 1232  # the client's EDNS size, capped at ours
        msg = DNSRecord.parse(reply)
        assert msg.header.tc == 1 and not msg.rr and [ar.rtype for ar in msg.ar] == [QTYPE.OPT]
        # the client retries over TCP and gets everything
        full = await dns.asyncquery.tcp(dns.message.make_query("big.example.test", "A"), "127.0.0.1",
                                        port=srv.port, timeout=3)
        assert len(full.answer[0]) == TruncatingUpstream.RECORDS and len(full.to_wire()) > 30_000
    finally:
        await srv.stop()


# ---------------------------------------------------------------------------------- 3. allow + RRL
@pytest.fixture
async def stub() -> AsyncIterator[tuple[StubUpstream, int]]:
    loop = asyncio.get_running_loop()
    upstream = StubUpstream()
    transport, _ = await loop.create_datagram_endpoint(lambda: upstream, local_addr=("127.0.0.1", 0))
    yield upstream, transport.get_extra_info("sockname")[1]
    transport.close()


@pytest.fixture
async def guarded(stub: tuple[StubUpstream, int]) -> AsyncIterator[DnsServer]:
    srv = await started(listen=("127.0.0.1", 0), upstreams=[("127.0.0.1", stub[1])], forward_timeout=0.5,
                        limits=DnsLimits(allow=tuple(ONLY_ONE), rrl=RrlPolicy(rate=20.0, burst=10, slip=2)))
    yield srv
    await srv.stop()


async def test_outsiders_get_zone_answers_but_no_recursion(
    guarded: DnsServer, stub: tuple[StubUpstream, int]
) -> None:
    upstream, _ = stub
    port = guarded.port
    for transport in (dns.asyncquery.udp, dns.asyncquery.tcp):
        fwd = await transport(dns.message.make_query("www.example.test", "A"), "127.0.0.1", port=port,
                              source=OUTSIDER, timeout=2)
        assert fwd.rcode() == dns.rcode.REFUSED and not fwd.answer
        zone = await transport(dns.message.make_query("1.web.myapp.container", "A"), "127.0.0.1", port=port,
                               source=OUTSIDER, timeout=2)
        assert addresses(zone) == ["127.0.0.2"]
    assert upstream.queries == 0
    inside = await dns.asyncquery.udp(dns.message.make_query("www.example.test", "A"), "127.0.0.1", port=port,
                                      timeout=2)
    assert addresses(inside) == ["192.0.2.1"] and upstream.queries == 1


async def test_outsiders_are_rate_limited_with_slip(guarded: DnsServer) -> None:
    packets = [query("1.web.myapp.container", i) for i in range(100)]
    replies, elapsed = await burst(guarded.port, packets, source=OUTSIDER)
    full = [r for r in replies if not r[2] & 0x02]
    slipped = [DNSRecord.parse(r) for r in replies if r[2] & 0x02]
    print(f"outsider: {len(full)} answers, {len(slipped)} truncated, {100 - len(replies)} dropped in {elapsed:.3f}s")
    assert len(full) >= 10  # the burst
    assert len(full) <= 10 + 20 * elapsed + 1  # then the rate
    assert slipped and len(replies) < 100  # some limited answers slip (TC=1), the others are dropped
    assert all(m.header.tc and not m.rr and str(m.q.qname) == "1.web.myapp.container." for m in slipped)
    assert guarded.stats.limited == 100 - len(full)
    # an allowed client is never limited
    replies, _ = await burst(guarded.port, packets, expect=100)
    assert len(replies) == 100 and not any(r[2] & 0x02 for r in replies)


# ---------------------------------------------------------------------------------- 4. precheck
def finding_packet(questions: int = 450) -> bytes:
    """The finding: ~6 KB, 450 questions whose names follow a compression chain of up to 900 hops.

    Question i's name is a label and a pointer to question i-1's qtype, which is itself a pointer
    to question i-1's name pointer: two hops per earlier question.
    """
    out = bytearray(struct.pack("!HHHHHH", 0x4242, 0x0100, questions, 0, 0, 0))
    prev_qtype = 0
    for i in range(questions):
        out += b"\x06abcdef"
        ptr_at = len(out)
        if i == 0:
            out += b"\x00"
            qtype = 0xC000 | ptr_at  # points at the root byte
        else:
            out += struct.pack("!H", 0xC000 | prev_qtype)
            qtype = 0xC000 | ptr_at
        prev_qtype = len(out)
        out += struct.pack("!HH", qtype, 1)
    return bytes(out)


def run_now(coro: Coroutine[Any, Any, bytes | None]) -> bytes | None:
    """Run a handler that does no I/O (no upstreams) to completion without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the handler waited for I/O")


def timed(handle: Callable[[], bytes | None]) -> tuple[bytes | None, float]:
    """The reply and the CPU seconds this thread spent on it (another process's load does not count)."""
    t0 = time.thread_time()
    reply = handle()
    return reply, time.thread_time() - t0


def offline_server() -> DnsServer:
    srv = DnsServer(listen=("127.0.0.1", 0), upstreams=[])
    srv.update(STATE)
    run_now(srv.handle(query("1.web.myapp.container", 1)))  # build the zone once
    return srv


def test_a_large_answer_is_encoded_once_per_query(monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding (CI): the first query for a name with many records encoded all eight rotations at
    once (10-17 ms for the group's 126 SRV and A records), and over UDP truncated each only after
    encoding it in full.  Now a query costs at most one encoding: a rotation is encoded the first
    time it is served, and a truncated answer (the same for every rotation) is encoded once."""
    import daprdockr.dnsserver as dnsserver

    calls: list[int] = []
    real = dnsserver.encode_answer

    def counting(**kwargs: Any) -> bytes:
        calls.append(len(kwargs["answers"]))
        return real(**kwargs)

    monkeypatch.setattr(dnsserver, "encode_answer", counting)
    srv = offline_server()
    calls.clear()
    udp = [run_now(srv.handle(query("myapp.container", i, qtype="SRV"))) for i in range(20)]
    assert len(calls) == 1 and all(r is not None and r[2] & 0x02 for r in udp)  # TC, one variant
    calls.clear()
    tcp = [run_now(srv.handle(query("myapp.container", i, qtype="SRV"), tcp=True)) for i in range(20)]
    assert len(calls) == 8  # each rotation once, when first served
    firsts = [dns.message.from_wire(r).answer[0][0].target for r in tcp if r is not None]  # type: ignore[attr-defined]
    assert len(set(firsts[:8])) == 8 and firsts[8:16] == firsts[:8]  # round robin, in turn


def test_udp_zone_answers_are_capped_at_our_edns_size() -> None:
    """Finding (CI, the fuzz test): a client offering an EDNS buffer of 4096 got a 3 871-byte zone
    answer over UDP (110 times its 35-byte query), though we advertise 1232 and the docstring
    says answers are capped there.  Now it gets TC=1 and retries over TCP."""
    srv = offline_server()
    for size in (1233, 4096, 65535):
        reply = run_now(srv.handle(query("myapp.container", 5, qtype="SRV", edns=size)))
        assert reply is not None and len(reply) <= 1232 and reply[2] & 0x02
        msg = dns.message.from_wire(reply)
        assert not msg.answer and msg.payload == 1232
    full = run_now(srv.handle(query("myapp.container", 6, qtype="SRV", edns=4096), tcp=True))
    assert full is not None and len(full) > 1232 and not full[2] & 0x02


async def test_finding_packet_is_answered_cheaply() -> None:
    packet = finding_packet()
    assert 5_500 < len(packet) < 6_500
    srv = offline_server()
    for tcp in (False, True):
        reply, cpu = timed(lambda tcp=tcp: run_now(srv.handle(packet, tcp=tcp)))
        print(f"finding packet ({'TCP' if tcp else 'UDP'}): {cpu * 1e3:.3f} ms")
        assert reply is not None and reply[:2] == b"\x42\x42" and rcode_of(reply) == dns.rcode.FORMERR
        assert cpu < BUDGET
    live = await started(listen=("127.0.0.1", 0), upstreams=[])
    try:
        (reply,), _ = await burst(live.port, [packet], expect=1, quiet=2)
        assert reply[:2] == b"\x42\x42" and rcode_of(reply) == dns.rcode.FORMERR
        assert addresses(await dns.asyncquery.udp(dns.message.make_query("1.web.myapp.container", "A"),
                                                  "127.0.0.1", port=live.port, timeout=2)) == ["127.0.0.2"]
    finally:
        await live.stop()


async def test_oversized_or_odd_queries_are_refused_before_parsing() -> None:
    srv = await started(listen=("127.0.0.1", 0), upstreams=[])
    try:
        plain = query("1.web.myapp.container", 9)
        head = plain[:12]
        cases = {
            "600 bytes over UDP without OPT": plain + b"\x00" * 600,
            "ANCOUNT 1": head[:6] + b"\x00\x01" + head[8:] + plain[12:] + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x05"
                         b"\x00\x04\x7f\x00\x00\x01",
            "ARCOUNT 2": head[:10] + b"\x00\x02" + plain[12:] + (b"\x00\x00\x29\x04\xd0" + bytes(6)) * 2,
            "pointer loop": head + b"\xc0\x0c\x00\x01\x00\x01",
        }
        for what, packet in cases.items():
            (reply,), _ = await burst(srv.port, [packet], expect=1, quiet=2)
            assert rcode_of(reply) == dns.rcode.FORMERR, what
    finally:
        await srv.stop()


ZONE_NAMES = ["1.web.myapp.container", "web.myapp.container", "_8080._tcp.web.myapp.container",
              "nope.myapp.container", "myapp.container", "container", "x.test", "a.b.c.example"]


def wire_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\x00"


def hdr(ident: int, flags: int, qd: int, an: int, ns: int, ar: int) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, qd, an, ns, ar)


u16 = st.integers(0, 0xFFFF)
names = st.one_of(
    st.sampled_from(ZONE_NAMES).map(wire_name),
    st.lists(st.binary(min_size=1, max_size=63), max_size=6).map(
        lambda labels: b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"),
)
questions = st.builds(lambda n, t, c: n + struct.pack("!HH", t, c), names,
                      st.sampled_from([1, 28, 33, 255, 6, 2, 41]) | u16, st.sampled_from([1, 3, 255]) | u16)
options = st.lists(st.builds(lambda c, d: struct.pack("!HH", c, len(d)) + d, u16, st.binary(max_size=300)),
                   max_size=24).map(b"".join)
opt_rr = st.builds(lambda size, rdata: b"\x00\x00\x29" + struct.pack("!H", size) + bytes(4)
                   + struct.pack("!H", len(rdata)) + rdata, u16, options)
flags = st.sampled_from([0x0100, 0x0000, 0x0110, 0x0120]) | u16


def chain_packet(n: int, label: int, extra_hops: int, qdcount: int) -> bytes:
    """Like the finding, with the sizes drawn: n questions, label bytes each, a pointer chain before them."""
    out = bytearray(hdr(1, 0x0100, qdcount, 0, 0, 0))
    out += b"\x00"  # a root byte the chain ends at
    target = 12
    for _ in range(extra_hops):
        here = len(out)
        out += struct.pack("!H", 0xC000 | target)
        target = here
    for _ in range(n):
        out += bytes([label]) + b"a" * label if label else b""
        here = len(out)
        out += struct.pack("!H", 0xC000 | target)
        out += struct.pack("!HH", 0xC000 | here, 1)  # the qtype is a pointer too
        target = here
    return bytes(out)


def mutate(packet: bytes, edits: list[tuple[int, int]]) -> bytes:
    b = bytearray(packet)
    for pos, value in edits:
        if b:
            b[pos % len(b)] = value
    return bytes(b)


hostile = st.one_of(
    st.binary(max_size=1500),
    # well-formed queries with random flags, maybe an OPT record with options
    st.builds(lambda i, f, q, o: hdr(i, f, 1, 0, 0, 1 if o else 0) + q + o, u16, flags, questions,
              st.just(b"") | opt_rr),
    # many questions, and header counts that do not match the body
    st.builds(lambda i, n, q, qd: hdr(i, 0x0100, qd if qd is not None else n, 0, 0, 0) + q * n,
              u16, st.integers(0, 600), questions, st.none() | u16),
    st.builds(lambda i, qd, an, ns, ar, body: hdr(i, 0x0100, qd, an, ns, ar) + body,
              u16, u16, u16, u16, u16, st.binary(max_size=400)),
    # compression chains and pointer loops
    st.builds(chain_packet, st.integers(1, 500), st.integers(0, 12), st.integers(0, 2000),
              st.integers(1, 0xFFFF)),
    st.builds(lambda i, ptrs: hdr(i, 0x0100, 1, 0, 0, 0) + b"".join(struct.pack("!H", 0xC000 | p) for p in ptrs)
              + b"\x00\x01\x00\x01", u16, st.lists(st.integers(0, 0x3FFF), min_size=1, max_size=50)),
    # well-formed queries with a few bytes changed
    st.builds(mutate, st.builds(lambda q, o: hdr(5, 0x0100, 1, 0, 0, 1 if o else 0) + q + o, questions,
                                st.just(b"") | opt_rr),
              st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=4)),
    # large packets (TCP allows 64 KB)
    st.builds(lambda h, n, fill: h + fill * n, st.builds(hdr, u16, flags, u16, u16, u16, u16),
              st.integers(0, 16000), st.sampled_from([b"\xc0\x0c", b"\x01a", b"\x00\x01\x00\x01", b"\x3f"])),
)


def test_fuzz_slowest_packet_is_cheap() -> None:
    """Random and adversarial packets through the handler: the slowest costs less than 5 ms of CPU.

    The 8 slowest are handled again, each 5 times by a fresh server (same state, empty caches),
    and each one's cheapest run is what counts: a packet that is expensive stays expensive, a
    spike of the machine (another process's load evicting caches) does not repeat."""
    srv = offline_server()
    slowest: list[Any] = [0.0, b"", False, None, 0.0]
    top: list[tuple[float, bytes, bool, str | None]] = []
    packets = [0]

    @settings(max_examples=8000, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(packet=hostile, tcp=st.booleans(), client=st.sampled_from([None, "127.0.0.1", "192.0.2.9"]))
    def one(packet: bytes, tcp: bool, client: str | None) -> None:
        reply, cpu = timed(lambda: run_now(srv.handle(packet, tcp=tcp, client=client)))
        packets[0] += 1
        top.append((cpu, packet, tcp, client))
        top.sort(key=lambda t: t[0], reverse=True)
        del top[8:]
        assert reply is None or len(reply) >= 12
        if reply is not None and not tcp:
            assert len(reply) <= 1232

    gc.collect()
    gc.disable()  # a collection of the test's own garbage is not the handler's cost
    try:
        one()
        for first, packet, tcp, client in top:
            fresh = [offline_server() for _ in range(5)]
            again = min(timed(lambda f=f, p=packet, t=tcp, c=client: run_now(f.handle(p, tcp=t, client=c)))[1]
                        for f in fresh)
            if again > slowest[0]:
                slowest[:] = [again, packet, tcp, client, first]
    finally:
        gc.enable()
    cpu, packet, tcp, client, first = slowest
    print(f"slowest of {packets[0]} packets: {cpu * 1e3:.3f} ms CPU at best of 5 ({first * 1e3:.3f} ms the first "
          f"time; {len(packet)} bytes, {'TCP' if tcp else 'UDP'}, client {client}, header {packet[:12].hex()})")
    assert cpu < BUDGET


# ---------------------------------------------------------------------------------- 5. TCP limits
async def test_tcp_connections_beyond_the_cap_are_closed() -> None:
    cap = 8
    srv = await started(listen=("127.0.0.1", 0), upstreams=[], limits=DnsLimits(max_tcp=cap, max_tcp_per_client=100))
    conns = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(cap + 10)]
    try:
        answered = closed = 0
        q = query("1.web.myapp.container", 3)
        for reader, writer in conns:
            writer.write(struct.pack("!H", len(q)) + q)
            try:
                await writer.drain()
                size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))[0]
                assert DNSRecord.parse(await reader.readexactly(size)).header.id == 3
                answered += 1
            except (asyncio.IncompleteReadError, ConnectionError):
                closed += 1
        assert (answered, closed) == (cap, 10)
        assert srv.tcp_connections == cap
        for _, writer in conns[:cap]:
            writer.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while srv.tcp_connections:  # the server sees them go
            assert loop.time() < deadline
            await asyncio.sleep(0.02)
        again = await dns.asyncquery.tcp(dns.message.make_query("1.web.myapp.container", "A"), "127.0.0.1",
                                         port=srv.port, timeout=2)
        assert addresses(again) == ["127.0.0.2"]
    finally:
        for _, writer in conns:
            writer.close()
        await srv.stop()


async def test_one_client_cannot_take_every_tcp_slot() -> None:
    """Regression: the TCP cap was global, so one client holding 64 idle connections (each sending
    a query every few seconds) locked every other client out.  Now one address gets a few."""
    srv = await started(listen=("127.0.0.1", 0), upstreams=[], limits=DnsLimits(max_tcp=64, max_tcp_per_client=4))
    q = query("1.web.myapp.container", 3)

    async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(struct.pack("!H", len(q)) + q)
        try:
            await writer.drain()
            size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))[0]
            return DNSRecord.parse(await reader.readexactly(size)).header.id == 3
        except (asyncio.IncompleteReadError, ConnectionError):
            return False

    greedy = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(10)]
    try:
        answered = [await ask(r, w) for r, w in greedy]
        assert answered.count(True) == 4 and answered.count(False) == 6
        other = await asyncio.open_connection("127.0.0.1", srv.port, local_addr=(OUTSIDER, 0))
        assert await ask(*other), "another client was locked out"
        other[1].close()
    finally:
        for _, writer in greedy:
            writer.close()
        await srv.stop()


async def test_tcp_client_that_never_reads_is_dropped() -> None:
    timeout = 1.0
    srv = await started(listen=("127.0.0.1", 0), upstreams=[], limits=DnsLimits(tcp_write_timeout=timeout))
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", srv.port))
        q = DNSRecord(DNSHeader(id=1, rd=1), q=DNSRecord.question("big.myapp.container", "SRV").q).pack()
        frame = struct.pack("!H", len(q)) + q
        # ~800 KB of queries asking for ~3 KB answers each: ~60 MB of answers, far more than the socket
        # buffers hold, so the server ends up blocked writing answers we never read
        sender = asyncio.create_task(loop.sock_sendall(sock, frame * 20_000))
        # meanwhile the server answers everyone else
        other = await dns.asyncquery.tcp(dns.message.make_query("2.web.myapp.container", "A"), "127.0.0.1",
                                         port=srv.port, timeout=2)
        assert addresses(other) == ["127.0.0.3"]
        udp = await dns.asyncquery.udp(dns.message.make_query("3.web.myapp.container", "A"), "127.0.0.1",
                                       port=srv.port, timeout=2)
        assert addresses(udp) == ["127.0.0.4"]
        # the stuck connection is reset after the write timeout (seen without reading: POLLERR/POLLHUP)
        poller = select.poll()
        poller.register(sock, select.POLLERR | select.POLLHUP)
        deadline = loop.time() + timeout + 10
        while not any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0)):
            assert loop.time() < deadline, "the server still holds a client that never reads"
            await asyncio.sleep(0.05)
        await asyncio.gather(sender, return_exceptions=True)  # done, or failed on the reset
        assert srv.tcp_connections == 0
    finally:
        sock.close()
        await srv.stop()


@pytest.mark.docker
async def test_the_default_allow_is_this_host_and_the_containers_network(docker_image: str) -> None:
    """Without ``--dns-allow`` the agent's DNS recurses for loopback, this host's own addresses
    (the host and host-network containers) and the subnet of Docker's ``bridge`` network (the
    containers'), read from the real engine; anyone else gets REFUSED."""
    import json as jsonlib
    import subprocess

    from daprdockr.adapters.docker_runtime import DockerRuntime
    from daprdockr.adapters.sockets import host_networks
    from daprdockr.agent.components import Dns
    from daprdockr.core.state import ClusterState

    bridge = jsonlib.loads(subprocess.run(["docker", "network", "inspect", "bridge"], capture_output=True,
                                          text=True, check=True).stdout)[0]["IPAM"]["Config"][0]["Subnet"]
    runtime = DockerRuntime(node_id="al1", advertise_ip="127.0.0.11")
    dns_ = Dns(listen=("127.0.0.11", 0), upstreams=[("127.0.0.1", 9)], ttl=5, workers=0, allow=(),
               container_networks=runtime.container_networks, state=ClusterState)
    await dns_.start()
    try:
        assert dns_.server is not None
        allowed = set(dns_.server.allow)
        assert ip_network(bridge) in allowed and ip_network("127.0.0.0/8") in allowed
        assert set(host_networks()) <= allowed
        assert not any(ip_network("192.0.2.1/32").subnet_of(n) for n in allowed if n.version == 4)
    finally:
        await dns_.stop()
        await runtime.close()
