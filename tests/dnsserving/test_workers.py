"""DNS worker processes on one SO_REUSEPORT address: real processes, real sockets, dnspython."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import AsyncIterator
from ipaddress import ip_network

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from daprdockr.core.dns.guard import DnsLimits, RrlPolicy
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from daprdockr.core.state import ClusterState
from daprdockr.dnsserver import DnsServer
from daprdockr.dnsserving.workers import FRAME, DnsWorkerPool
from daprdockr.errors import DaprDockrError

WEB = ServiceName(group="myapp", service="web")
# TCP queries sent at once from 127.0.0.1: each process serves at most max_tcp_per_client
# connections from one address and closes further ones unanswered, and the kernel hashes each
# connection to a process of the group (10 at once over 2 workers put 9 on one about 2% of runs)
TCP_AT_ONCE = DnsLimits().max_tcp_per_client


def state(addresses: list[str]) -> ClusterState:
    return ClusterState(
        services={WEB: ServiceSpec(name=WEB, image="x", instances=len(addresses), http_port=8080)},
        instances={
            (WEB, n): InstanceRecord(service=WEB, number=n, node=f"n{n}", address=a, state="running",
                                     ports=(("8080/tcp", 30000 + n),))
            for n, a in enumerate(addresses, start=1)
        },
    )


@pytest.fixture
async def shared() -> AsyncIterator[tuple[DnsServer, DnsWorkerPool]]:
    """The agent's arrangement: its own server (probe, SO_REUSEPORT) plus 2 workers."""
    server = DnsServer(listen=("127.0.0.1", 0), upstreams=[], reuse_port=True)
    await server.start()
    pool = DnsWorkerPool(listen=("127.0.0.1", server.port), upstreams=[], count=2)
    first = state(["127.0.0.11", "127.0.0.12"])
    server.update(first)
    pool.update(first)
    await pool.start()
    yield server, pool
    await pool.stop()
    await server.stop()


async def query_from_fresh_sockets(port: int, name: str, count: int, *, tcp: bool = False) -> list[set[str]]:
    """``count`` A queries, each from its own source port (so SO_REUSEPORT spreads them)."""
    async def one() -> set[str]:
        q = dns.message.make_query(name, dns.rdatatype.A)
        if tcp:
            r = await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=2)
        else:
            r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=2)
        return {rr.address for rrset in r.answer for rr in rrset}

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def until(predicate: object, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def answers_become(port: int, name: str, expected: set[str], *, within: float) -> None:
    """Query ``name`` from 40 fresh source ports until every answer is ``expected``."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while True:
        answers = await query_from_fresh_sockets(port, name, 40)
        if all(a == expected for a in answers):
            return
        assert loop.time() - t0 < within, answers
        await asyncio.sleep(0.01)


async def test_workers_share_the_address_and_answer(shared: tuple[DnsServer, DnsWorkerPool]) -> None:
    server, pool = shared
    answers = await query_from_fresh_sockets(server.port, "web.myapp.container", 60)
    assert all(a == {"127.0.0.11", "127.0.0.12"} for a in answers)
    # the counters the workers report say they, not only the agent's server, answered
    await until(lambda: pool.stats_total().queries + server.stats.queries == 60, 10.0)  # reports every ~1 s
    assert pool.stats_total().queries > 0
    assert pool.stats_total().answers.get("NOERROR", 0) == pool.stats_total().queries
    tcp = await query_from_fresh_sockets(server.port, "1.web.myapp.container", TCP_AT_ONCE, tcp=True)
    assert all(a == {"127.0.0.11"} for a in tcp)


async def test_workers_alone_serve_udp_and_tcp(shared: tuple[DnsServer, DnsWorkerPool]) -> None:
    """With the agent's own sockets closed, every answer (UDP and TCP) comes from a worker."""
    server, pool = shared
    await server.stop()
    udp = await query_from_fresh_sockets(server.port, "web.myapp.container", 20)
    tcp = await query_from_fresh_sockets(server.port, "2.web.myapp.container", TCP_AT_ONCE, tcp=True)
    assert all(a == {"127.0.0.11", "127.0.0.12"} for a in udp)
    assert all(a == {"127.0.0.12"} for a in tcp)
    await until(lambda: pool.stats_total().queries == 20 + TCP_AT_ONCE, 10.0)
    assert pool.alive == 2


async def test_spread_uses_every_process_even_for_one_client_socket(
    shared: tuple[DnsServer, DnsWorkerPool]
) -> None:
    """Without the BPF program one client socket always hashes to the same process."""
    server, pool = shared
    assert server.spread_queries(members=3)
    before = server.stats.queries
    q = dns.message.make_query("web.myapp.container", dns.rdatatype.A)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:  # one source port
        client.setblocking(False)
        for i in range(90):
            q.id = i
            await loop.sock_sendto(client, q.to_wire(), ("127.0.0.1", server.port))
            reply = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(client, 4096), 2))
            assert reply.id == i and {rr.address for rrset in reply.answer for rr in rrset} == {
                "127.0.0.11", "127.0.0.12"}
    await until(lambda: server.stats.queries - before + pool.stats_total().queries == 90, 10.0)
    mine = server.stats.queries - before
    assert 10 <= mine <= 60  # about a third each; hashing alone would give 0 or 90
    assert all(w.stats.queries >= 10 for w in pool._workers.values())


async def test_every_worker_follows_state_changes(shared: tuple[DnsServer, DnsWorkerPool]) -> None:
    server, pool = shared
    await query_from_fresh_sockets(server.port, "3.web.myapp.container", 20)  # cache NXDOMAIN everywhere
    new = state(["127.0.0.11", "127.0.0.12", "127.0.0.13"])
    server.update(new)
    pool.update(new)
    # (a bound for correctness only: how fast is for the benchmarks)
    await answers_become(server.port, "3.web.myapp.container", {"127.0.0.13"}, within=5.0)


async def test_worker_exits_on_eof_and_is_restarted(shared: tuple[DnsServer, DnsWorkerPool]) -> None:
    server, pool = shared
    victim = pool._workers[0].proc
    assert victim.stdin is not None
    victim.stdin.close()  # what the kernel does when the agent dies, even by SIGKILL
    await asyncio.wait_for(victim.wait(), 2.0)
    assert victim.returncode == 0
    await pool.supervise_once()  # first failure: backoff 0.5 s
    await asyncio.sleep(0.6)
    await pool.supervise_once()
    assert pool.alive == 2 and victim.pid not in pool.pids()
    other = pool._workers[1].proc
    os.kill(other.pid, signal.SIGKILL)
    await other.wait()
    await until(lambda: pool.alive == 1, 1.0)
    await pool.supervise_once()  # sees the exit, backs off
    assert pool.alive == 1
    await asyncio.sleep(0.6)
    await pool.supervise_once()
    assert pool.alive == 2 and pool.restarts == 2
    # the restarted workers got the newest state
    answers = await query_from_fresh_sockets(server.port, "2.web.myapp.container", 40)
    assert all(a == {"127.0.0.12"} for a in answers)


async def test_garbage_frames_do_not_kill_a_worker(shared: tuple[DnsServer, DnsWorkerPool]) -> None:
    server, pool = shared
    proc = pool._workers[0].proc
    assert proc.stdin is not None
    for junk in (b"not a pickle", b"\x80\x05\x95", b"\x80\x05K\x01."):  # garbage, truncated, an int
        proc.stdin.write(FRAME.pack(len(junk)) + junk)
    await proc.stdin.drain()
    await asyncio.sleep(0.3)
    assert proc.returncode is None
    new = state(["127.0.0.21"])
    server.update(new)
    pool.update(new)  # the worker still reads frames after the garbage
    # (a bound for correctness only: 1.0 s was missed once, 1.25 s, on a loaded host)
    await answers_become(server.port, "1.web.myapp.container", {"127.0.0.21"}, within=5.0)
    assert proc.returncode is None and pool.alive == 2


async def test_a_taken_address_is_still_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        server = DnsServer(listen=("127.0.0.1", port), upstreams=[], reuse_port=True)
        with pytest.raises(DaprDockrError, match="cannot listen"):
            await server.start()


async def test_pool_start_fails_clearly_when_workers_cannot_bind() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:  # no SO_REUSEPORT: no sharing
        taken.bind(("127.0.0.1", 0))
        pool = DnsWorkerPool(listen=("127.0.0.1", taken.getsockname()[1]), upstreams=[], count=1)
        with pytest.raises(DaprDockrError, match="did not start"):
            await pool.start()
        assert pool.alive == 0


def test_limits_round_trip_through_the_worker_config() -> None:
    allow = (ip_network("127.0.0.0/8"), ip_network("172.17.0.0/16"), ip_network("fd00::/64"))
    rrl = RrlPolicy(rate=5.0, burst=6, slip=0, max_keys=7)
    limits = DnsLimits(allow=allow, rrl=rrl, max_forwards=3, max_tcp=4, max_tcp_per_client=2, tcp_write_timeout=1.5)
    assert DnsLimits.from_config(json.loads(json.dumps(limits.to_config()))) == limits
    none = DnsLimits(allow=(), rrl=None, max_forwards=1, max_tcp=1, tcp_write_timeout=1.0)
    assert DnsLimits.from_config(json.loads(json.dumps(none.to_config()))) == none
    assert DnsLimits.from_config({}) == DnsLimits()  # an old config: the server's defaults


async def exchange(port: int, packets: list[bytes], *, source: str) -> list[bytes | None]:
    """Each packet in turn from one client socket (so the kernel sends them all to one process)."""
    loop = asyncio.get_running_loop()
    replies: list[bytes | None] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.setblocking(False)
        for p in packets:
            await loop.sock_sendto(sock, p, ("127.0.0.1", port))
            try:
                replies.append(await asyncio.wait_for(loop.sock_recv(sock, 65535), 1.0))
            except TimeoutError:
                replies.append(None)
    return replies


async def test_workers_get_the_limits() -> None:
    """allow and rrl reach every worker: an outsider gets no recursion and is rate limited there too."""
    server = DnsServer(listen=("127.0.0.1", 0), upstreams=[], reuse_port=True)
    await server.start()
    pool = DnsWorkerPool(listen=("127.0.0.1", server.port), upstreams=[], count=2,
                         limits=DnsLimits(allow=(ip_network("127.0.0.1/32"),),
                                          rrl=RrlPolicy(rate=0.01, burst=2, slip=1)))
    pool.update(state(["127.0.0.11"]))
    await pool.start()
    await server.stop()  # only workers answer
    try:
        def q(name: str, ident: int) -> bytes:
            m = dns.message.make_query(name, dns.rdatatype.A)
            m.id = ident
            return m.to_wire()

        packets = [q("x.test", 1), q("1.web.myapp.container", 2), q("1.web.myapp.container", 3)]
        outsider = await exchange(server.port, packets, source="127.0.0.77")
        assert all(r is not None for r in outsider)
        msgs = [dns.message.from_wire(r) for r in outsider if r is not None]
        assert msgs[0].rcode() == dns.rcode.REFUSED  # no recursion for outsiders
        assert [rr.address for rrset in msgs[1].answer for rr in rrset] == ["127.0.0.11"]
        assert msgs[2].flags & dns.flags.TC and not msgs[2].answer  # beyond the burst of 2: slipped
        inside = await exchange(server.port, packets, source="127.0.0.1")
        msgs = [dns.message.from_wire(r) for r in inside if r is not None]
        assert len(msgs) == 3 and msgs[0].rcode() == dns.rcode.SERVFAIL  # may recurse (no upstreams here)
        assert not any(m.flags & dns.flags.TC for m in msgs)
    finally:
        await pool.stop()


async def test_workers_acknowledge_each_state_they_serve(shared: tuple[DnsServer, DnsWorkerPool]) -> None:
    """A removal is confirmed only once every worker serves without it: each worker prints the
    revision of every state it applied, and the pool reports the oldest."""
    from dataclasses import replace

    server, pool = shared
    port = server.port
    newer = replace(state(["127.0.0.11"]), revision=4242)  # instance 2 is gone at revision 4242
    server.update(newer)
    pool.update(newer)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while pool.applied_revision != 4242:
        assert loop.time() < deadline, pool.applied_revision
        await asyncio.sleep(0.01)
    # by then every process answers without it
    await answers_become(port, "2.web.myapp.container", set(), within=0.01)
