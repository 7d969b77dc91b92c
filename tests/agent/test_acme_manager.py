"""The ACME manager against real etcd and Debian's real pebble, without nginx: the challenge
answers are served by a test HTTP server from the records in etcd (tests/support/acme_answers.py).
Several managers with leases of their own stand for several agents."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.tls_store import TlsStore
from daprdockr.agent.acme_manager import AcmeManager
from daprdockr.agent.config import AcmeSettings
from daprdockr.cli.main import app
from daprdockr.core.acme_records import AcmeOrder
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.tls import CertRecord
from tests.conftest import missing
from tests.support.acme_answers import EtcdAnswers, etcd_answers
from tests.support.pebble import Pebble, pebble_server
from tests.support.procs import free_port
from tests.support.tlsgen import issue

pytestmark = pytest.mark.etcd
HOST = "shop.acme.test"


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[Pebble]:
    if not shutil.which("pebble"):
        missing("pebble (apt-get install pebble)")
    with pebble_server(tmp_path / "pebble", http_port=free_port(), validity=3600) as p:
        p.dns[HOST] = "127.0.0.1"
        yield p


@pytest.fixture
async def tls(store: EtcdStore) -> TlsStore:
    return TlsStore(store=store)


@pytest.fixture
async def answers(tls: TlsStore, pebble: Pebble) -> AsyncIterator[EtcdAnswers]:
    async with etcd_answers(tls, listen=("127.0.0.1", pebble.http_port)) as a:
        yield a


def spec(host: str = HOST, https: str = "on") -> ServiceSpec:
    return ServiceSpec.from_dict({"image": "busybox", "http_host": host, "http_port": 80, "https": https},
                                 name=ServiceName.parse("web.shop"))


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def manager(tls: TlsStore, pebble: Pebble, *, node: str, lease: int, services: list[ServiceSpec],
            clock: Clock | None = None) -> AcmeManager:
    settings = AcmeSettings(directory=pebble.directory, email="ops@example.com", ca_file=str(pebble.ca_file),
                            interval=0.5, retry_base=30.0, challenge_wait=0.2, order_timeout=30.0)
    return AcmeManager(tls=tls, node_id=node, lease=lambda: lease, services=lambda: services, settings=settings,
                       clock=clock or time.time)


def leaf(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(pem.encode())[0]


async def test_three_agents_one_order_the_certificate_lands_in_etcd(
    store: EtcdStore, tls: TlsStore, pebble: Pebble, answers: EtcdAnswers
) -> None:
    services = [spec(), spec("plain.acme.test", "off")]
    managers = [manager(tls, pebble, node=f"n{i}", lease=await store.grant_lease(10), services=services)
                for i in (1, 2, 3)]
    results = await asyncio.gather(*(m.manage_once() for m in managers))
    assert sorted(map(len, results)) == [0, 0, 1]  # one agent ordered, the others saw its lock
    assert pebble.orders_issued() == 1
    rec = await tls.get_cert(HOST)
    assert rec is not None and rec.source == "acme" and rec.info.names == (HOST,)
    assert "Pebble" in rec.info.issuer
    root = x509.load_pem_x509_certificate(pebble.root_pem.encode())
    chain = x509.load_pem_x509_certificates(rec.cert_pem.encode())
    chain[-1].verify_directly_issued_by(root)
    state, _ = await tls.read()
    assert state.locks == {} and state.challenges == {}  # unlocked, answers deleted
    order = state.orders[HOST]
    assert order.state == "valid" and order.failures == 0 and order.order_url.startswith("https://127.0.0.1:")
    assert state.account is not None and state.account.uri  # the account key is kept in etcd
    assert [t for t in answers.fetched if t]  # pebble fetched the answer served from etcd
    assert sum(m.orders_total["issued"] for m in managers) == 1
    # the next passes find the certificate: no order
    assert [await m.manage_once() for m in managers] == [[], [], []]
    assert pebble.orders_issued() == 1


async def test_a_failed_order_backs_off_then_succeeds(
    store: EtcdStore, tls: TlsStore, pebble: Pebble, answers: EtcdAnswers, etcd_endpoints: str, prefix: str
) -> None:
    pebble.dns[HOST] = "127.0.0.2"  # nothing answers there
    clock = Clock()
    m = manager(tls, pebble, node="n1", lease=await store.grant_lease(10), services=[spec()], clock=clock)
    assert await m.manage_once() == [HOST]
    order = await tls.get_order(HOST)
    assert order is not None and order.state == "failed" and order.failures == 1
    assert HOST in order.last_error
    assert order.next_try == pytest.approx(time.time() + 30, abs=5)
    assert m.orders_total == {"issued": 0, "failed": 1}
    # `cert ls` shows the failed order, its error and when it is tried again
    listed = await asyncio.to_thread(
        CliRunner().invoke, app, ["--etcd", etcd_endpoints, "--prefix", prefix, "cert", "ls", "--json"])
    assert listed.exit_code == 0, listed.output
    row = next(r for r in json.loads(listed.stdout) if r["host"] == HOST)
    assert row["order"]["state"] == "failed" and HOST in row["order"]["last_error"] and row["order"]["next_try"] > 0
    pebble.dns[HOST] = "127.0.0.1"
    assert await m.manage_once() == []  # still backing off
    other = manager(tls, pebble, node="n2", lease=await store.grant_lease(10), services=[spec()], clock=clock)
    assert await other.manage_once() == []  # every agent honours the backoff
    clock.offset = 31
    assert await other.manage_once() == [HOST]
    order = await tls.get_order(HOST)
    assert order is not None and order.state == "valid" and order.failures == 0
    assert await tls.get_cert(HOST) is not None


async def test_renewal_at_two_thirds_of_the_lifetime(store: EtcdStore, tls: TlsStore, pebble: Pebble,
                                                     answers: EtcdAnswers) -> None:
    clock = Clock()
    m = manager(tls, pebble, node="n1", lease=await store.grant_lease(10), services=[spec()], clock=clock)
    assert await m.manage_once() == [HOST]
    first = await tls.get_cert(HOST)
    assert first is not None
    lifetime = first.info.not_after - first.info.not_before
    clock.offset = lifetime * 0.6
    assert await m.manage_once() == []  # not yet
    clock.offset = lifetime * 0.67 + 5
    assert await m.manage_once() == [HOST]
    second = await tls.get_cert(HOST)
    assert second is not None and second.info.serial != first.info.serial and second.source == "acme"
    assert pebble.orders_issued() == 2


async def test_a_manual_certificate_is_never_replaced(store: EtcdStore, tls: TlsStore, pebble: Pebble,
                                                      answers: EtcdAnswers) -> None:
    wildcard = issue(["*.acme.test"])
    await tls.put_cert(CertRecord.make(host="*.acme.test", cert_pem=wildcard.cert_pem, key_pem=wildcard.key_pem,
                                       source="manual", now=time.time()))
    m = manager(tls, pebble, node="n1", lease=await store.grant_lease(10), services=[spec()])
    assert await m.manage_once() == []
    assert pebble.orders_issued() == 0


async def test_the_order_of_a_dead_agent_is_taken_over_once_its_lease_is_gone(
    store: EtcdStore, tls: TlsStore, pebble: Pebble, answers: EtcdAnswers
) -> None:
    dead = await store.grant_lease(10)
    assert await tls.try_lock(HOST, node="n9", lease=dead)
    await tls.put_order(HOST, AcmeOrder(node="n9", state="ordering", order_url="https://127.0.0.1:1/o/1",
                                        updated=time.time()))
    await tls.put_challenge("tok-of-the-dead", host=HOST, authorization="tok-of-the-dead.abc", lease=dead)
    m = manager(tls, pebble, node="n1", lease=await store.grant_lease(10), services=[spec()])
    assert await m.manage_once() == []  # n9 holds the lock
    await store.revoke_lease(dead)  # n9 died: its lease ends (as when its TTL runs out)
    assert await m.manage_once() == [HOST]
    state, _ = await tls.read()
    assert state.orders[HOST].state == "valid" and state.orders[HOST].node == "n1"
    assert state.challenges == {} and state.locks == {}
    assert HOST in state.certs
