"""The informer against a fake store: list at a revision, watch from the revision after it,
re-list on ``resync``, one ``on_change`` per change, own writes and their echoes applied once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from daprdockr.adapters.informer import Informer
from daprdockr.core.keys import KeySchema
from daprdockr.core.mirror import WatchEvent
from daprdockr.core.names import ServiceName
from daprdockr.core.state import RawKV

S = KeySchema("/p")
WEB = ServiceName(group="myapp", service="web")


def spec_kv(instances: int, rev: int) -> RawKV:
    value = json.dumps({"image": "busybox", "instances": instances}).encode()
    return RawKV(key=S.service(WEB), value=value, create_revision=1, mod_revision=rev)


def put(kv: RawKV) -> WatchEvent:
    return WatchEvent(kind="put", key=kv.key, value=kv.value, revision=kv.mod_revision,
                      create_revision=kv.create_revision)


class FakeStore:
    """A key space and a scripted watch stream (events pushed by the test)."""

    schema = S

    def __init__(self, kvs: list[RawKV], revision: int) -> None:
        self.kvs, self.revision = kvs, revision
        self.lists = 0
        self.watch_from: list[int | None] = []
        self.events: asyncio.Queue[WatchEvent] = asyncio.Queue()

    async def read_prefix(self, prefix: str) -> tuple[list[RawKV], int]:
        self.lists += 1
        return list(self.kvs), self.revision

    async def watch(self, prefix: str | None = None, *, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        self.watch_from.append(start_revision)
        while True:
            yield await self.events.get()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_list_then_watch_from_the_next_revision_then_resync() -> None:
    store = FakeStore([spec_kv(1, rev=5)], revision=10)
    changes = []
    informer = Informer(store=store, on_change=lambda: changes.append(informer.revision))
    task = asyncio.create_task(informer.run())
    try:
        await settle()
        assert store.lists == 1 and store.watch_from == [11] and informer.state.services[WEB].instances == 1
        store.events.put_nowait(put(spec_kv(3, rev=12)))
        await settle()
        assert informer.state.services[WEB].instances == 3 and changes == [10, 12]
        # the stream was interrupted: the informer lists again and takes what it reads
        store.kvs, store.revision = [spec_kv(7, rev=20)], 20
        store.events.put_nowait(WatchEvent(kind="resync"))
        await settle()
        assert store.lists == 2 and informer.state.services[WEB].instances == 7 and changes[-1] == 20
        # a late event from before the re-read changes nothing and calls nobody
        store.events.put_nowait(put(spec_kv(9, rev=15)))
        await settle()
        assert informer.state.services[WEB].instances == 7 and changes[-1] == 20 and len(changes) == 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_own_write_and_its_echo_count_once() -> None:
    store = FakeStore([spec_kv(1, rev=5)], revision=5)
    changes: list[int] = []
    informer = Informer(store=store, on_change=lambda: changes.append(informer.revision))
    await informer.list_once()
    mine = put(spec_kv(2, rev=6))
    assert informer.apply(mine) is True  # read-your-writes: the confirmed write, at once
    assert informer.apply(mine) is False  # ... and its echo from the watch
    assert informer.state.services[WEB].instances == 2 and changes == [5, 6]


async def test_follow_and_wait_for() -> None:
    """``follow`` runs the informer and feeds each state to a step until it says done (a CLI's
    --wait); ``wait_for`` waits on an informer running elsewhere (the agent's)."""
    store = FakeStore([spec_kv(1, rev=5)], revision=5)
    seen: list[int] = []

    def step(state: object) -> bool:
        from daprdockr.core.state import ClusterState

        assert isinstance(state, ClusterState)
        seen.append(state.services[WEB].instances)
        return state.services[WEB].instances == 3

    async def later() -> None:
        await asyncio.sleep(0.05)
        store.events.put_nowait(put(spec_kv(2, rev=6)))
        store.events.put_nowait(put(spec_kv(3, rev=7)))

    writer = asyncio.create_task(later())
    assert await Informer(store=store).follow(step, within=5) is True
    await writer
    assert seen[0] == 1 and seen[-1] == 3
    assert await Informer(store=store).follow(lambda s: False, within=0.2) is False

    informer = Informer(store=store)
    await informer.list_once()
    flag = {"ok": False}
    asyncio.get_running_loop().call_later(0.1, lambda: flag.update(ok=True))  # not an etcd change: polled
    assert await informer.wait_for(lambda s: flag["ok"], within=2, poll=0.02) is True
    assert await informer.wait_for(lambda s: False, within=0.1) is False
