"""The lifecycle records against a real etcd: spec history and rollback, rollout failure decided
once, replacement slots bounded across concurrent agents, takeovers that the old owner cannot undo,
drain markers."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.lifecycle_store import LifecycleStore
from daprdockr.core.jsondata import dumps
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from daprdockr.core.rollout import Slot
from daprdockr.errors import NotFoundError

pytestmark = pytest.mark.etcd
WEB = ServiceName(group="lc", service="web")


def spec(version: str, *, instances: int = 2) -> ServiceSpec:
    return ServiceSpec.from_dict({"image": "busybox", "instances": instances, "env": {"V": version},
                                  "update": {"parallel": 2}}, name=WEB)


async def test_history_keeps_ten_versions_and_rollback_writes_a_new_one(store: EtcdStore) -> None:
    life = LifecycleStore(store)
    for v in range(1, 13):
        await life.put_service(spec(str(v)))
    await life.put_service(spec("12"))  # the same spec again: no new version
    entries = await life.history(WEB)
    assert [e.version for e in entries] == list(range(3, 13))
    restored, source = await life.rollback(WEB)
    assert (restored, source) == (spec("11"), 11)
    assert await life.get_service(WEB) == spec("11")
    restored, source = await life.rollback(WEB, to=5)
    assert (restored, source) == (spec("5"), 5)
    entries = await life.history(WEB)
    assert [(e.version, e.cause) for e in entries[-2:]] == [(13, "rollback to 11"), (14, "rollback to 5")]
    with pytest.raises(NotFoundError, match="no version 2 "):
        await life.rollback(WEB, to=2)  # dropped from the history


async def test_each_change_of_the_containers_writes_a_rollout_record(store: EtcdStore) -> None:
    life = LifecycleStore(store)
    await life.put_service(spec("1"))
    assert (await life.rollout(WEB))[0] is None  # a first version replaces nothing
    await life.put_service(spec("1", instances=5))  # scaling is no rollout
    assert (await life.rollout(WEB))[0] is None
    await life.put_service(spec("2", instances=5))
    record, _ = await life.rollout(WEB)
    assert record is not None
    assert (record.version, record.target, record.previous_version, record.previous, record.state) == (
        3, spec("2").runtime_hash, 2, spec("1").runtime_hash, "rolling")
    await life.delete_service(WEB)
    assert (await life.rollout(WEB))[0] is None


async def test_a_failed_rollout_is_rolled_back_once_whoever_reports_it(store: EtcdStore) -> None:
    life = LifecycleStore(store)
    await life.put_service(spec("good"))
    await life.put_service(spec("bad"))
    outcomes = await asyncio.gather(*(
        life.fail_rollout(WEB, target=spec("bad").runtime_hash, reason=f"agent {i}", rollback=True)
        for i in range(5)))
    assert sorted(outcomes) == ["", "", "", "", "rolled-back"]
    assert await life.get_service(WEB) == spec("good")
    record, _ = await life.rollout(WEB)
    assert record is not None and record.state == "rolled-back" and record.previous == spec("bad").runtime_hash
    assert (await life.history(WEB))[-1].cause == "automatic rollback to 1"
    # a late report of the same failure changes nothing
    assert await life.fail_rollout(WEB, target=spec("bad").runtime_hash, reason="late", rollback=True) == ""


async def test_pause_and_resume(store: EtcdStore) -> None:
    life = LifecycleStore(store)
    await life.put_service(spec("1"))
    await life.put_service(spec("2"))
    assert await life.fail_rollout(WEB, target=spec("2").runtime_hash, reason="r", rollback=False) == "paused"
    assert await life.get_service(WEB) == spec("2")  # paused where it is
    await life.resume(WEB)
    record, _ = await life.rollout(WEB)
    assert record is not None and record.state == "rolling"
    with pytest.raises(NotFoundError):
        await life.resume(WEB)


async def test_slots_bound_replacements_across_agents_and_free_with_the_lease(store: EtcdStore) -> None:
    life = LifecycleStore(store)
    leases = [await store.grant_lease(5) for _ in range(4)]
    got = await asyncio.gather(*(
        life.take_slot(WEB, parallel=2, slot=Slot(node=f"n{i}", instance=i + 1), lease=lease)
        for i, lease in enumerate(leases)))
    assert sorted(index for index, _ in got) == [0, 0, 1, 2]
    taken = {index: revision for index, revision in got if index}
    holder = leases[[index for index, _ in got].index(1)]
    await store.revoke_lease(holder)  # an agent dies: its slot goes with its lease
    fresh = await store.grant_lease(5)
    assert (await life.take_slot(WEB, parallel=2, slot=Slot(node="n9", instance=9), lease=fresh))[0] == 1
    assert await life.release_slot(WEB, 2, create_revision=taken[2])
    state = await store.snapshot()
    assert set(state.slots[WEB]) == {1}


async def test_a_failed_replacement_marks_its_own_slot_only(store: EtcdStore) -> None:
    life = LifecycleStore(store)
    lease = await store.grant_lease(5)
    slot = Slot(node="n1", instance=3, target="abc")
    index, revision = await life.take_slot(WEB, parallel=1, slot=slot, lease=lease)
    assert index == 1
    assert await life.mark_slot_failed(WEB, 1, slot=replace(slot, failed="could not start", create_revision=revision),
                                       lease=lease)
    (marked,) = (await store.snapshot()).slots[WEB].values()
    assert (marked.failed, marked.target, marked.create_revision) == ("could not start", "abc", revision)
    # a stale revision (the slot was released and taken anew) marks nothing
    assert not await life.mark_slot_failed(WEB, 1, slot=replace(slot, failed="x", create_revision=revision - 1),
                                           lease=lease)


async def test_a_takeover_cannot_be_undone_by_the_old_owner(store: EtcdStore) -> None:
    old_lease, new_lease = await store.grant_lease(10), await store.grant_lease(10)
    rec = InstanceRecord(service=WEB, number=1, node="old", address="127.0.0.11", state="running")
    claimed = await store.claim_instance(rec, lease=old_lease)
    assert claimed is not None
    mine = replace(rec, create_revision=claimed.create_revision, lease=old_lease)
    state = await store.snapshot()
    read = state.instances[(WEB, 1)]
    taken = await store.take_over_instance(replace(read, node="new", address="127.0.0.12"), lease=new_lease)
    assert taken is not None and taken.create_revision == claimed.create_revision
    # the old owner still knows the key's create revision, but the key is no longer on its lease
    assert await store.update_instance(replace(mine, error="late write"), lease=old_lease) is None
    assert await store.release_instance(mine) is None
    # a second takeover from the same (now stale) read loses
    assert await store.take_over_instance(replace(read, node="third"), lease=old_lease) is None
    now = (await store.snapshot()).instances[(WEB, 1)]
    assert (now.node, now.lease) == ("new", new_lease)


async def test_drain_markers(store: EtcdStore) -> None:
    life = LifecycleStore(store)
    await life.drain("n1", on=True)
    await life.drain("n2", on=True, shutdown=True)
    assert (await store.snapshot()).draining == {"n1", "n2"}
    assert await life.end_shutdown_drain("n1") is False  # an operator's drain stays
    assert await life.end_shutdown_drain("n2") is True
    await life.drain("n1", on=False)
    assert (await store.snapshot()).draining == frozenset()


async def test_a_release_deletes_only_the_slot_it_took(store: EtcdStore) -> None:
    life = LifecycleStore(store)
    a, b, c = [await store.grant_lease(10) for _ in range(3)]
    _, mine = await life.take_slot(WEB, parallel=1, slot=Slot(node="n1", instance=1), lease=a)
    assert await life.release_slot(WEB, 1, create_revision=mine)
    assert await life.take_slot(WEB, parallel=1, slot=Slot(node="n2", instance=2), lease=b) != (0, 0)
    # a retried release (the first one went through) does not delete n2's slot
    assert not await life.release_slot(WEB, 1, create_revision=mine)
    assert (await store.snapshot()).slots[WEB][1].node == "n2"
    # n2's lease expires, n3 takes the index: n2's late release does not delete n3's slot
    theirs = (await store.snapshot()).slots[WEB][1].create_revision
    await store.revoke_lease(b)
    assert (await life.take_slot(WEB, parallel=1, slot=Slot(node="n3", instance=3), lease=c))[0] == 1
    assert not await life.release_slot(WEB, 1, create_revision=theirs)
    assert (await store.snapshot()).slots[WEB][1].node == "n3"


async def test_an_automatic_rollback_keeps_the_instance_count_and_the_route(store: EtcdStore) -> None:
    life = LifecycleStore(store)
    v1 = ServiceSpec.from_dict({"image": "busybox", "instances": 2, "env": {"V": "1"}, "http_port": 80,
                                "http_host": "a.test"}, name=WEB)
    v2 = ServiceSpec.from_dict({"image": "busybox", "instances": 2, "env": {"V": "2"}, "http_port": 80,
                                "http_host": "b.test"}, name=WEB)
    await life.put_service(v1)
    await life.put_service(v2)
    await life.update_service(WEB, lambda cur, _: replace(cur, instances=6) if cur else v2)  # scaled meanwhile
    assert await life.fail_rollout(WEB, target=v2.runtime_hash, reason="r", rollback=True) == "rolled-back"
    back = await life.get_service(WEB)
    assert back is not None and back.runtime_hash == v1.runtime_hash
    assert (back.env, back.instances, back.http_host) == (v1.env, 6, "b.test")


async def test_a_service_written_before_history_was_kept_is_seeded_and_rolls_back(store: EtcdStore) -> None:
    life = LifecycleStore(store)
    await store.put_raw(store.schema.service(WEB), dumps(spec("old").to_dict()))  # no history, no rollout record
    await life.put_service(spec("new"))
    entries = await life.history(WEB)
    assert [(e.version, e.cause) for e in entries] == [(1, "seeded"), (2, "set")]
    assert await life.fail_rollout(WEB, target=spec("new").runtime_hash, reason="r", rollback=True) == "rolled-back"
    assert await life.get_service(WEB) == spec("old")


async def test_a_rollback_with_no_earlier_version_pauses_and_says_why(store: EtcdStore) -> None:
    life = LifecycleStore(store)
    await life.put_service(spec("1"))
    await life.put_service(spec("2"))
    await store.transaction(compares=[], ops=[(store.schema.history(WEB, 1), None, 0)], what="test")  # lost
    assert await life.fail_rollout(WEB, target=spec("2").runtime_hash, reason="boom", rollback=True) == "paused"
    record, _ = await life.rollout(WEB)
    assert record is not None and record.state == "paused"
    assert record.reason == "boom; paused instead of rolled back: version 1 is not in the history"
