"""EtcdStore against a real etcd: CRUD, claims, leases, watch, garbage, unreachable."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import aetcd.exceptions as aetcd_exc
import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.mirror import WatchEvent
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord, NodeRecord
from daprdockr.errors import LeaseLostError, StoreUnavailableError, ValidationError

pytestmark = pytest.mark.etcd
WEB = ServiceName(group="myapp", service="web")


def spec(instances: int = 2) -> ServiceSpec:
    return ServiceSpec.from_dict(
        {"image": "busybox", "instances": instances, "http_host": "web.example.com", "http_port": 80},
        name=WEB,
    )


async def test_service_round_trip(store: EtcdStore) -> None:
    await VersionStore(store).put_service(spec(3))
    assert await VersionStore(store).get_service(WEB) == spec(3)
    state = await store.snapshot()
    assert list(state.services) == [WEB]
    assert await VersionStore(store).delete_service(WEB) is True
    assert await VersionStore(store).get_service(WEB) is None
    assert await VersionStore(store).delete_service(WEB) is False


async def test_claim_is_exclusive_and_bound_to_lease(store: EtcdStore) -> None:
    a = await store.grant_lease(2)
    b = await store.grant_lease(5)
    rec = InstanceRecord(service=WEB, number=1, node="a", address="127.0.0.11")
    rev_a, rev_b = await asyncio.gather(
        store.claim_instance(rec, lease=a),
        store.claim_instance(InstanceRecord(service=WEB, number=1, node="b", address="x"), lease=b),
    )
    assert sorted([rev_a is not None, rev_b is not None]) == [False, True]
    winner_lease = a if rev_a else b
    state = await store.snapshot()
    assert state.instances[(WEB, 1)].lease == winner_lease
    await store.revoke_lease(winner_lease)
    assert (WEB, 1) not in (await store.snapshot()).instances


async def test_update_and_release_only_own_claim(store: EtcdStore) -> None:
    lease = await store.grant_lease(5)
    rec = InstanceRecord(service=WEB, number=2, node="a", address="127.0.0.11")
    claimed = await store.claim_instance(rec, lease=lease)
    assert claimed is not None and claimed.kind == "put" and claimed.lease == lease
    rev = claimed.create_revision
    assert rev == claimed.revision
    mine = replace(rec, create_revision=rev, state="running", ports=(("80/tcp", 32000),))
    updated = await store.update_instance(mine, lease=lease)
    assert updated is not None and updated.create_revision == rev and updated.revision > rev
    stale = replace(mine, create_revision=rev - 1)
    assert await store.update_instance(stale, lease=lease) is None
    assert await store.release_instance(stale) is None
    got = (await store.snapshot()).instances[(WEB, 2)]
    assert got.state == "running" and got.port_for(80) == 32000
    released = await store.release_instance(mine)
    assert released is not None and released.kind == "delete"
    assert (WEB, 2) not in (await store.snapshot()).instances


async def test_lease_expiry_removes_node_and_keepalive_detects_loss(store: EtcdStore) -> None:
    lease = await store.grant_lease(1)
    await store.put_node(NodeRecord(node_id="n1", address="127.0.0.11"), lease=lease)
    assert "n1" in (await store.snapshot()).nodes
    assert await store.keepalive(lease) >= 1
    await store.revoke_lease(lease)
    assert "n1" not in (await store.snapshot()).nodes
    with pytest.raises(LeaseLostError):
        await store.keepalive(lease)


async def test_garbage_is_skipped_not_fatal(store: EtcdStore, prefix: str) -> None:
    await VersionStore(store).put_service(spec())
    await store.put_raw(f"{prefix}/services/myapp/bad", b"{not json")
    await store.put_raw(f"{prefix}/services/myapp/wrong", b'{"image": 5}')
    await store.put_raw(f"{prefix}/services/UPPER/x", b"{}")
    await store.put_raw(f"{prefix}/instances/myapp/web/0", b"{}")
    await store.put_raw(f"{prefix}/random/key", b"1")
    state = await store.snapshot()
    assert list(state.services) == [WEB]
    assert len(state.skipped) == 5


async def test_watch_sees_changes(store: EtcdStore) -> None:
    seen: list[WatchEvent] = []

    _, revision = await store.read_prefix(store.schema.root)

    async def consume() -> None:  # (from the revision read: no write is missed however slow the start)
        async for ev in store.watch(start_revision=revision + 1):
            if ev.key == store.schema.service(WEB):  # (a spec write also writes its history entry)
                seen.append(ev)
            if ev.kind == "delete":
                return

    task = asyncio.create_task(consume())
    await VersionStore(store).put_service(spec())
    await VersionStore(store).delete_service(WEB)
    await asyncio.wait_for(task, 5)
    assert [e.kind for e in seen] == ["put", "delete"]
    assert seen[0].key == store.schema.service(WEB)


async def test_unreachable_etcd_fails_fast_naming_endpoints() -> None:
    eps = parse_endpoints("http://127.0.0.1:1,127.0.0.1:2")
    s = EtcdStore(endpoints=eps, schema=KeySchema("/x"), timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailableError) as err:
        await s.connect()
    assert time.monotonic() - t0 < 5
    assert "127.0.0.1:1" in str(err.value) and "127.0.0.1:2" in str(err.value)
    await s.close()


async def test_failover_to_second_endpoint(etcd_endpoints: str, prefix: str) -> None:
    eps = parse_endpoints(f"http://127.0.0.1:1,{etcd_endpoints}")
    async with EtcdStore(endpoints=eps, schema=KeySchema(prefix), timeout=1.0) as s:
        await VersionStore(s).put_service(spec())
        assert await VersionStore(s).get_service(WEB) == spec()


async def _fail_transiently(_client: object) -> None:
    raise aetcd_exc.ConnectionFailedError("injected: endpoint unreachable")


async def test_a_failing_call_never_cancels_another_call_in_flight(store: EtcdStore, prefix: str) -> None:
    """A failed call retires its channel for new calls but must not close it under the others:
    grpc.aio would end their in-flight calls with CancelledError."""
    key = f"{prefix}/wake"
    waiter = asyncio.create_task(store._call(lambda c: c.watch_once(key.encode(), timeout=5), what="wait"))
    await asyncio.sleep(0.3)  # the watch is in flight on the store's channel
    with pytest.raises(StoreUnavailableError):
        await store._call(_fail_transiently, what="doomed")
    await store.put_raw(key, b"1")
    event = await asyncio.wait_for(waiter, 5)
    assert event.kv.value == b"1"


async def test_update_service_retries_on_a_concurrent_write(store: EtcdStore, monkeypatch: pytest.MonkeyPatch) -> None:
    await VersionStore(store).put_service(spec(1))
    real = store.transaction
    conflicts = 0

    async def with_a_writer_in_between(**kw: Any) -> int:
        nonlocal conflicts
        if conflicts == 0:  # another client writes between our read and our transaction
            conflicts += 1
            await VersionStore(store).put_service(replace(spec(1), env=(("OTHER", "1"),)))
        return await real(**kw)

    monkeypatch.setattr(store, "transaction", with_a_writer_in_between)
    seen: list[ServiceSpec | None] = []

    def scale(current: ServiceSpec | None, problem: str | None) -> ServiceSpec:
        seen.append(current)
        assert current is not None and problem is None
        return replace(current, instances=4)

    result = await VersionStore(store).update_service(WEB, scale)
    assert conflicts == 1 and len(seen) == 2, "the change was re-applied to the fresh spec"
    assert result.instances == 4 and dict(result.env) == {"OTHER": "1"}
    assert await VersionStore(store).get_service(WEB) == result


async def test_update_service_sees_a_malformed_spec_with_its_reason(store: EtcdStore, prefix: str) -> None:
    await store.put_raw(f"{prefix}/services/myapp/web", b'{"image": 5}')
    got: list[tuple[ServiceSpec | None, str | None]] = []

    def replace_it(current: ServiceSpec | None, problem: str | None) -> ServiceSpec:
        got.append((current, problem))
        return spec(2)

    await VersionStore(store).update_service(WEB, replace_it)
    assert got[0][0] is None and got[0][1] is not None and "image" in got[0][1]
    assert await VersionStore(store).get_service(WEB) == spec(2)


async def test_a_delete_between_the_read_and_the_write_of_a_merge_is_never_undone(
    store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``svc set --instances 4`` racing ``svc del``, made deterministic: the delete lands between
    the merge's read and its transaction.  The transaction's compare fails, the merge is redone on
    what is stored now (nothing: ``svc set`` without an image is refused), and the deleted
    service stays deleted.  A read-merge-put without a compare would have written it back."""
    from daprdockr.clikit.specfile import merge_onto

    await VersionStore(store).put_service(spec(1))
    real = store.transaction
    deleted = False

    async def delete_in_between(**kw: Any) -> int:
        nonlocal deleted
        if not deleted and kw.get("what") == "set":
            deleted = True
            assert await VersionStore(store).delete_service(WEB)
        return await real(**kw)

    monkeypatch.setattr(store, "transaction", delete_in_between)
    with pytest.raises(ValidationError, match="image"):
        await VersionStore(store).update_service(WEB, lambda cur, bad: merge_onto(WEB, cur, bad, {"instances": 4}))
    assert deleted and await VersionStore(store).get_service(WEB) is None, "the deleted service came back"


async def test_an_instance_keys_history_is_read_up_to_a_revision_even_after_a_compaction(
    store: EtcdStore, prefix: str
) -> None:
    key = f"{prefix}/instances/myapp/web/1"
    revisions = []
    for value in (b'{"a":1}', b'{"a":2}', None, b'{"a":3}', b'{"a":4}'):
        if value is None:
            await store._call(lambda c: c.delete(key.encode()), what="delete")
        else:
            await store.put_raw(key, value)
        revisions.append((await store.read_prefix(key))[1])
    history = await store.instance_history(ServiceName(group="myapp", service="web"), 1, until=revisions[3])
    assert [(e.revision, e.value) for e in history] == [
        (revisions[0], b'{"a":1}'), (revisions[1], b'{"a":2}'), (revisions[2], None), (revisions[3], b'{"a":3}')]
    await store._call(lambda c: c.compact(revisions[1]), what="compact")
    after = await store.key_history(key, until=revisions[4])
    assert [e.revision for e in after] == [revisions[2], revisions[3], revisions[4]]
