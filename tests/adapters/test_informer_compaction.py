"""The informer against a real etcd that compacted the revision its watch starts from: it lists
again (etcd's "required revision has been compacted") and watches from the revision after that
list, so a write between the new list and the new watch is not lost, with one list (before, the
watch reopened from etcd's newest revision and said ``resync`` once more: a second full list)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from daprdockr.adapters.etcd_maintenance import EtcdMaintenance
from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.informer import Informer
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.state import RawKV

pytestmark = pytest.mark.etcd
WEB = ServiceName(group="myapp", service="web")


def spec(instances: int) -> ServiceSpec:
    return ServiceSpec(name=WEB, image="busybox", instances=instances)


async def test_the_informer_lists_again_after_its_watch_start_was_compacted(
        store: EtcdStore, monkeypatch: pytest.MonkeyPatch) -> None:
    await VersionStore(store).put_service(spec(1))
    maintenance = EtcdMaintenance(store)
    read = store.read_prefix
    lists: list[int] = []

    async def read_then_write(prefix: str, **kw: object) -> tuple[list[RawKV], int]:
        kvs, revision = await read(prefix)
        lists.append(revision)
        if len(lists) == 1:
            # the first list is stale before its watch starts: writes, then etcd compacted past it
            for n in (2, 3, 4):
                await VersionStore(store).put_service(spec(n))
            assert await maintenance.compact((await maintenance.status()).revision)
        elif len(lists) == 2:
            await VersionStore(store).put_service(spec(99))  # between the re-list and the new watch
        return kvs, revision

    monkeypatch.setattr(store, "read_prefix", read_then_write)
    informer = Informer(store=store)
    task = asyncio.create_task(informer.run())
    try:
        ok = await informer.wait_for(lambda s: WEB in s.services and s.services[WEB].instances == 99, within=10)
        state = informer.state
        assert ok, f"the informer shows {state.services.get(WEB)} after lists at {lists}"
        assert len(lists) == 2 and lists[1] > lists[0]  # listed again once, at a newer revision
        await VersionStore(store).put_service(spec(7))  # and the new watch goes on
        assert await informer.wait_for(lambda s: s.services[WEB].instances == 7, within=5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
