"""Property test: the DNS server's answer cache, kept per owner across state updates (only the
changed services', their groups' and the volatile answers end), answers exactly what a fresh
server answers from the same state, after random event sequences (the mirror's events: every
key kind, garbage, resyncs)."""

from __future__ import annotations

import asyncio

from dnslib import DNSRecord
from hypothesis import given, settings

from daprdockr.core.mirror import StateMirror, WatchEvent
from daprdockr.core.state import ClusterState, RawKV
from daprdockr.dnsserver import DnsServer
from tests.core.test_incremental_state import EVENTS, SCHEMA

NAMES = [(f"{n}.{svc}.container", t) for svc in ("web.a", "api.a", "web.b") for n in (1, 2, 5)
         for t in ("A", "SRV")] + [
    (name, t) for name in ("web.a.container", "api.a.container", "web.b.container", "a.container", "b.container",
                           "_80._tcp.web.a.container", "80.tcp.1.api.a.container", "nope.a.container")
    for t in ("A", "SRV", "AAAA")] + [("container", "SOA"), ("container", "NS")]


async def answer(server: DnsServer, name: str, qtype: str) -> tuple[object, ...]:
    """The reply's rcode, flags and records (sorted: rotations differ only in order)."""
    q = DNSRecord.question(name, qtype)
    q.header.id = 7
    wire = await server.handle(q.pack())
    assert wire is not None
    r = DNSRecord.parse(wire)
    return (r.header.rcode, r.header.tc, r.header.aa, sorted(map(str, r.rr)), sorted(map(str, r.auth)),
            sorted(map(str, r.ar)))


def fresh(state: ClusterState) -> DnsServer:
    server = DnsServer(listen=("127.0.0.1", 0), upstreams=[])
    server.update(state)
    return server


async def same_answers(server: DnsServer, state: ClusterState) -> None:
    server.update(state)
    clean = fresh(state)
    for name, qtype in NAMES:
        assert await answer(server, name, qtype) == await answer(clean, name, qtype), (name, qtype)


@settings(max_examples=80, deadline=None)
@given(EVENTS)
def test_cached_answers_equal_a_fresh_servers(events: list[tuple[str, str, bytes, int]]) -> None:
    asyncio.run(_run(events))


async def _run(events: list[tuple[str, str, bytes, int]]) -> None:
    mirror = StateMirror(schema=SCHEMA)
    mirror.reset([], revision=1)
    server = DnsServer(listen=("127.0.0.1", 0), upstreams=[])
    server.update(mirror.state())
    for revision, (kind, key, value, lease) in enumerate(events, start=2):
        if kind == "put":
            mirror.apply(WatchEvent(kind="put", key=key, value=value, revision=revision, lease=lease,
                                    create_revision=revision))
        elif kind == "delete":
            mirror.apply(WatchEvent(kind="delete", key=key, revision=revision))
        elif kind == "resync":
            mirror.reset([RawKV(key=kv.key, value=kv.value, lease=kv.lease, create_revision=kv.create_revision,
                                mod_revision=kv.mod_revision) for kv in mirror._kvs.values()], revision=revision)
        else:  # a burst of queries fills the cache; the next events must end exactly what they change
            await same_answers(server, mirror.state())
    await same_answers(server, mirror.state())
