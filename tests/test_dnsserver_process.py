"""DNS abuse against the real server process (``daprdockr dns``, fed by a real etcd), on loopback.

The in-process tests (``test_dnsserver_hostile.py``) pin each defence down; these run the same
attacks against the process an operator runs, as a client would: its own file descriptors
(``/proc/<pid>/fd``) stay flat in a self-forward loop, a truncated upstream answer is never sent
back whole over UDP, and a packet-level fuzz over UDP finds no packet that holds the server up
(each hostile datagram is followed by a real query; the slowest answer is reported).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import dns.message
import dns.rcode
import pytest
from hypothesis import HealthCheck, given, settings

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from tests.support.procs import free_port, terminate
from tests.test_dnsserver_hostile import hostile, query, rcode_of, truncating_upstream

pytestmark = pytest.mark.etcd
WEB = ServiceName(group="myapp", service="web")


class DnsProcess:
    def __init__(self, *, etcd: str, prefix: str, port: int, upstream: tuple[str, int], log: Path) -> None:
        self.port = port
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daprdockr", "--etcd", etcd, "--prefix", prefix, "dns",
                 "--listen", f"127.0.0.1:{port}", "--dns-upstream", f"{upstream[0]}:{upstream[1]}"],
                stdout=out, stderr=subprocess.STDOUT)

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def ask(self, packet: bytes, *, timeout: float = 2.0) -> bytes | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(packet, ("127.0.0.1", self.port))
            try:
                return sock.recv(65535)
            except TimeoutError:
                return None

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while self.ask(query("1.web.myapp.container", 1), timeout=0.3) is None:
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()

    def stop(self) -> None:
        terminate(self.proc, grace=10)


@pytest.fixture
async def seeded(store: EtcdStore) -> AsyncIterator[None]:
    await VersionStore(store).put_service(ServiceSpec(name=WEB, image="busybox", instances=1))
    lease = await store.grant_lease(30)
    rec = InstanceRecord(service=WEB, number=1, node="n1", address="127.0.0.11", state="running",
                         ports=(("8080/tcp", 31001),))
    assert await store.claim_instance(rec, lease=lease) is not None
    yield


@contextlib.contextmanager
def dns_process(etcd: str, prefix: str, upstream: tuple[str, int] | None, tmp: Path) -> Iterator[DnsProcess]:
    port = free_port("127.0.0.1")
    proc = DnsProcess(etcd=etcd, prefix=prefix, port=port, upstream=upstream or ("127.0.0.1", port),
                      log=tmp / "dns.log")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


async def test_a_self_forward_loop_keeps_the_process_fds_flat(
    seeded: None, etcd_endpoints: str, prefix: str, tmp_path: Path
) -> None:
    with dns_process(etcd_endpoints, prefix, None, tmp_path) as srv:  # its only upstream is itself
        before = srv.fds()
        peak = before
        replies = []
        for i in range(50):
            replies.append(await asyncio.to_thread(srv.ask, query(f"n{i}.example.test", i)))
            peak = max(peak, srv.fds())
        print(f"server fds: {before} before, peak {peak}")
        assert all(r is not None and rcode_of(r) == dns.rcode.SERVFAIL for r in replies)
        assert peak - before <= 2
        assert "not forwarding to it" in srv.log.read_text()


async def test_a_truncated_upstream_answer_is_never_amplified_over_udp(
    seeded: None, etcd_endpoints: str, prefix: str, tmp_path: Path
) -> None:
    async with truncating_upstream() as up:
        with dns_process(etcd_endpoints, prefix, ("127.0.0.1", up), tmp_path) as srv:
            q = query("big.example.test", 7)
            reply = await asyncio.to_thread(srv.ask, q)
            assert reply is not None
            print(f"query {len(q)} bytes, reply {len(reply)} bytes over UDP")
            assert len(reply) <= 512 and reply[2] & 0x02, "answer not truncated for a client without EDNS"


@pytest.mark.slow
def test_fuzz_no_datagram_holds_the_server_process_up(
    seeded: None, etcd_endpoints: str, prefix: str, tmp_path: Path
) -> None:
    """Each hostile datagram is followed by a real query from the same socket; the time until the
    real answer arrives bounds what the hostile one cost the server.  The 8 slowest packets are
    then timed 7 times more each and their fastest time kept (scheduling noise does not repeat,
    an expensive packet does).  The bound asserted on that (20 ms of wall clock, loopback round
    trip included) only catches a pathological packet (the finding: 0.8 s for one); the figures
    are printed."""
    with dns_process(etcd_endpoints, prefix, ("127.0.0.1", 9), tmp_path) as srv:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(2)
        ids = iter(range(1, 1 << 30))
        timed: list[tuple[float, bytes]] = []

        def round_trip(packet: bytes) -> float:
            good = query("1.web.myapp.container", next(ids) & 0xFFFF)
            t0 = time.perf_counter()
            with contextlib.suppress(OSError):  # (a few hostile packets are larger than a datagram may be)
                sock.sendto(packet[:65000], ("127.0.0.1", srv.port))
            sock.sendto(good, ("127.0.0.1", srv.port))
            while True:  # skip any reply to the hostile packet: wait for the real answer
                reply = sock.recv(65535)
                if reply[:2] == good[:2] and reply[3] & 0x0F == dns.rcode.NOERROR:
                    return time.perf_counter() - t0

        @settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(hostile)
        def one(packet: bytes) -> None:
            timed.append((round_trip(packet), packet))

        try:
            one()
            worst = sorted(timed, key=lambda t: t[0], reverse=True)[:8]
            again = [(min(round_trip(p) for _ in range(7)), first, p) for first, p in worst]
        finally:
            sock.close()
        fastest, first, packet = max(again, key=lambda t: t[0])
        print(f"{len(timed)} hostile datagrams; slowest first pass {worst[0][0] * 1000:.2f} ms; slowest packet "
              f"re-timed: {fastest * 1000:.2f} ms at best ({first * 1000:.2f} ms first; {packet[:48]!r}...)")
        assert srv.proc.poll() is None, srv.log.read_text()[-2000:]
        assert fastest < 0.02


async def test_an_instance_claimed_while_it_runs_is_answered_and_a_removed_one_is_not(
    etcd_endpoints: str, prefix: str, store: EtcdStore, tmp_path: Path
) -> None:
    """``daprdockr dns`` follows etcd through the fanout: an instance claimed after it started is
    answered, and once its key is deleted it is not."""
    await VersionStore(store).put_service(ServiceSpec(name=WEB, image="busybox", instances=1))

    def addresses(proc: DnsProcess) -> list[str]:
        reply = proc.ask(query("1.web.myapp.container", 7))
        if reply is None:
            return []
        return [rr.address for rrset in dns.message.from_wire(reply).answer for rr in rrset]

    async def until(proc: DnsProcess, want: list[str]) -> None:
        deadline = time.monotonic() + 10
        while (got := addresses(proc)) != want:
            assert time.monotonic() < deadline, (got, want)
            await asyncio.sleep(0.1)

    with dns_process(etcd_endpoints, prefix, None, tmp_path) as proc:
        assert addresses(proc) == []
        lease = await store.grant_lease(30)
        rec = InstanceRecord(service=WEB, number=1, node="n1", address="127.0.0.11", state="running",
                             ports=(("8080/tcp", 31001),))
        assert await store.claim_instance(rec, lease=lease) is not None
        await until(proc, ["127.0.0.11"])
        await store.revoke_lease(lease)
        await until(proc, [])
