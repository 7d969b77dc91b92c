"""adapters/tls_store.py against a real etcd: certificates round-trip, the read at one revision and
the watch keep the same state, a lock is exclusive and goes with its lease, challenges go with
theirs, the ACME account is created once however many agents race."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.tls_store import TlsStore
from daprdockr.core.acme_records import AcmeAccount, AcmeOrder
from daprdockr.core.tls import CertRecord
from daprdockr.core.tls_keys import TlsSchema
from daprdockr.core.tls_state import apply_event
from daprdockr.errors import ConflictError, ValidationError
from tests.support.tlsgen import issue, make_ca

pytestmark = pytest.mark.etcd
CA = make_ca()


def _record(host: str) -> CertRecord:
    i = issue([host], ca=CA)
    return CertRecord.make(host=host, cert_pem=i.cert_pem, key_pem=i.key_pem, source="manual", now=time.time())


@pytest.fixture
def tls(store: EtcdStore) -> TlsStore:
    return TlsStore(store=store, schema=TlsSchema(store.schema.prefix))


async def _eventually(probe: Callable[[], Awaitable[bool]], *, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await probe():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {within}s")


async def test_cert_round_trip_and_the_cluster_prefix_untouched(tls: TlsStore, store: EtcdStore, prefix: str) -> None:
    rec = _record("a.example.com")
    assert await tls.get_cert("a.example.com") is None
    await tls.put_cert(rec)
    assert await tls.get_cert("A.Example.com") == rec
    kv = await store.get_kv(f"{prefix}-tls/certs/a.example.com")
    assert kv is not None and kv.lease == 0
    assert (await store.read_prefix(store.schema.root))[0] == []  # nothing under <prefix>/: old agents see nothing
    assert await tls.delete_cert("a.example.com") is True
    assert await tls.delete_cert("a.example.com") is False
    assert await tls.get_cert("a.example.com") is None


async def test_malformed_value_read_aside_get_names_it(tls: TlsStore, store: EtcdStore, prefix: str) -> None:
    await tls.put_cert(_record("a.example.com"))
    await store.put_raw(f"{prefix}-tls/certs/b.example.com", b"{garbage")
    state, revision = await tls.read()
    assert list(state.certs) == ["a.example.com"] and revision == state.revision > 0
    assert "not JSON" in state.bad[f"{prefix}-tls/certs/b.example.com"]
    with pytest.raises(ConflictError, match=r"of b\.example\.com is malformed: value is not JSON"):
        await tls.get_cert("b.example.com")
    assert await tls.delete_cert("b.example.com") is True  # a malformed one can still be deleted


async def test_watch_from_read_revision_keeps_the_same_state(tls: TlsStore) -> None:
    await tls.put_cert(_record("a.example.com"))
    state, revision = await tls.read()
    events = tls.watch(revision + 1)
    lease = await tls.store.grant_lease(10)
    await tls.put_cert(_record("*.example.com"))
    await tls.delete_cert("a.example.com")
    await tls.put_challenge("tok", host="x.example.com", authorization="tok.thumb", lease=lease)
    assert await tls.try_lock("x.example.com", node="n1", lease=lease)
    await tls.put_order("x.example.com", AcmeOrder(node="n1", state="ordering", updated=time.time()))
    try:
        for _ in range(5):
            event = await anext(events)
            state = apply_event(state, tls.schema, event)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    fresh, _ = await tls.read()
    assert state == fresh
    assert list(state.certs) == ["*.example.com"] and dict(state.challenges) == {"tok": "tok.thumb"}
    assert dict(state.locks) == {"x.example.com": "n1"} and state.orders["x.example.com"].state == "ordering"


async def test_lock_is_exclusive_and_vanishes_with_its_lease(tls: TlsStore) -> None:
    a, b = await tls.store.grant_lease(2), await tls.store.grant_lease(30)
    results = await asyncio.gather(tls.try_lock("h.example.com", node="n1", lease=a),
                                   tls.try_lock("h.example.com", node="n2", lease=b))
    assert sorted(results) == [False, True]
    holder = "n1" if results[0] else "n2"
    other = "n2" if holder == "n1" else "n1"
    assert await tls.unlock("h.example.com", node=other) is False  # not the holder's: untouched
    assert dict((await tls.read())[0].locks) == {"h.example.com": holder}
    assert await tls.unlock("h.example.com", node=holder) is True
    assert await tls.try_lock("h.example.com", node="n1", lease=a)
    assert not await tls.try_lock("h.example.com", node="n2", lease=b)
    # n1's agent dies (its 2 s lease is not kept alive): the lock goes with it, n2 takes it

    async def free() -> bool:
        return not (await tls.read())[0].locks
    await _eventually(free, within=8)
    assert await tls.try_lock("h.example.com", node="n2", lease=b)
    assert dict((await tls.read())[0].locks) == {"h.example.com": "n2"}


async def test_challenge_goes_with_its_lease_and_bad_ones_are_refused(tls: TlsStore) -> None:
    lease = await tls.store.grant_lease(30)
    await tls.put_challenge("tok1", host="a.example.com", authorization="tok1.abc", lease=lease)
    await tls.put_challenge("tok2", host="a.example.com", authorization="tok2.abc", lease=lease)
    assert await tls.delete_challenge("tok2") is True
    for token, host, auth in [("tok3", "a.example.com", "other.abc"), ("bad/token", "a.example.com", "x.y"),
                              ("tok4", "not a host", "tok4.abc")]:
        with pytest.raises(ValidationError):
            await tls.put_challenge(token, host=host, authorization=auth, lease=lease)
    state, _ = await tls.read()
    assert dict(state.challenges) == {"tok1": "tok1.abc"} and not state.bad
    await tls.store.revoke_lease(lease)
    assert not (await tls.read())[0].challenges


async def test_account_created_once_among_racing_agents(tls: TlsStore, store: EtcdStore, prefix: str) -> None:
    accounts = [AcmeAccount(directory="https://ca/dir", email="ops@example.com", key=f'{{"k": {i}}}', uri="")
                for i in range(5)]
    stored = await asyncio.gather(*(tls.put_account(acc) for acc in accounts))
    assert len(set(stored)) == 1 and stored[0] in accounts
    assert await tls.get_account() == stored[0]
    registered = AcmeAccount(**{**stored[0].to_dict(), "uri": "https://ca/acct/1"})
    assert await tls.put_account(registered, overwrite=True) == registered
    assert await tls.put_account(accounts[0]) == registered  # (exists: the stored one)
    # a malformed stored account reads as none and is replaced by the next put
    await store.put_raw(f"{prefix}-tls/acme/account", b"[]")
    assert await tls.get_account() is None
    assert await tls.put_account(accounts[1]) == accounts[1] == await tls.get_account()


async def test_order_round_trip_malformed_reads_as_none(tls: TlsStore, store: EtcdStore, prefix: str) -> None:
    order = AcmeOrder(node="n1", state="failed", order_url="https://ca/order/1", failures=2, last_error="timeout",
                      next_try=time.time() + 60, updated=time.time())
    await tls.put_order("a.example.com", order)
    assert await tls.get_order("a.example.com") == order
    await store.put_raw(f"{prefix}-tls/acme/orders/a.example.com", b'{"state": "lost"}')
    assert await tls.get_order("a.example.com") is None
    assert await tls.delete_order("a.example.com") is True
    assert await tls.get_order("a.example.com") is None
