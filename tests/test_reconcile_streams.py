"""The reconciler's own loop (``Reconciler.run``) driven by event streams, as the agent runs it.

Unlike ``test_reconcile.py`` (which calls ``reconcile_once`` step by step), here the fake etcd
feeds a real :class:`~daprdockr.adapters.informer.Informer` through a watch stream: the
reconciler's own confirmed writes reach the mirror at once (read-your-writes) *and* come back as
echoes from the watch, and the stream can be interrupted (``resync``: the informer lists again).
The fake Docker engine emits an event when a container dies, which only marks the container
listing stale (as the agent's ``docker-events`` task does).  Nothing else wakes the loop: a key
held after a failed action is retried only because the planner said when (``next_wake``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from daprdockr.adapters.informer import Informer
from daprdockr.core.containers import ContainerInfo
from daprdockr.core.jsondata import dumps
from daprdockr.core.mirror import StateMirror, WatchEvent
from daprdockr.core.model import ServiceSpec
from daprdockr.core.records import NodeRecord
from daprdockr.core.state import RawKV
from daprdockr.reconcile import RELIST_PACE, Reconciler
from tests.test_reconcile import LEASE, SCHEMA, WEB, FakeDocker, FakeEtcd


class StreamEtcd(FakeEtcd):
    """The fake etcd with a watch stream: every commit (ours or another client's) is an event."""

    schema = SCHEMA

    def __init__(self) -> None:
        super().__init__(mirror=StateMirror(schema=SCHEMA))  # (unused: the informer has the mirror)
        self.stream: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self.lists = 0

    def _commit(self, key: str, value: bytes | None, lease: int = 0) -> WatchEvent:
        ev = super()._commit(key, value, lease)
        self.stream.put_nowait(ev)  # the watch echoes every write, ours included
        return ev

    def external(self, key: str, value: bytes | None, lease: int = 0) -> None:
        self._commit(key, value, lease)  # seen only through the watch

    async def read_prefix(self, prefix: str) -> tuple[list[RawKV], int]:
        self.lists += 1
        return [RawKV(key=k, value=v.value, lease=v.lease, create_revision=v.create, mod_revision=v.mod)
                for k, v in self.kvs.items()], self.revision

    async def watch(self, prefix: str | None = None, *, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        while True:
            yield await self.stream.get()


class EventedDocker(FakeDocker):
    """The fake engine with an event stream (a container's death is an event)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: asyncio.Queue[str] = asyncio.Queue()

    def die(self, number: int) -> None:
        super().die(number)
        self.events.put_nowait(f"die {number}")


class Node:
    def __init__(self, docker: EventedDocker | None = None) -> None:
        self.etcd = StreamEtcd()
        self.docker = docker or EventedDocker()
        self.informer = Informer(store=self.etcd, on_change=lambda: self.r.mark_dirty())
        self.r = Reconciler(node_id="n1", address="127.0.0.11", store=self.etcd, runtime=self.docker,
                            mirror=self.informer.mirror, on_written=self.informer.apply, claim_grace=0.05)
        self.r.lease = LEASE
        self.r.claiming = True
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Node:
        self.etcd.external(SCHEMA.node("n1"), json.dumps(NodeRecord(node_id="n1", address="127.0.0.11").to_dict())
                           .encode(), LEASE)

        async def docker_events() -> None:
            while True:
                await self.docker.events.get()
                self.r.mark_containers_dirty()

        self.tasks = [asyncio.create_task(self.informer.run()), asyncio.create_task(docker_events()),
                      asyncio.create_task(self.r.run(resync_interval=3600.0))]  # no periodic resync: events only
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.r.cancel_all()

    def spec(self, instances: int) -> None:
        spec = ServiceSpec.from_dict({"image": "busybox", "instances": instances, "http_port": 8080}, name=WEB)
        self.etcd.external(SCHEMA.service(WEB), dumps(spec.to_dict()))

    def running(self) -> dict[int, str]:
        return {r.number: r.container_id for r in self.informer.state.instances_of(WEB) if r.state == "running"}

    async def until(self, done: Callable[[], bool], *, limit: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + limit
        while not done():
            assert loop.time() < end, f"not reached; etcd log {self.etcd.log}, docker log {self.docker.log}"
            await asyncio.sleep(0.01)


async def test_the_loop_converges_on_events_alone_and_echoes_change_nothing() -> None:
    async with Node() as n:
        n.spec(3)
        await n.until(lambda: len(n.running()) == 3 and not n.docker.log[3:])
        await asyncio.sleep(0.3)  # every echo of our own writes has come back meanwhile
        assert n.etcd.log == ["claim 1", "update 1 running", "claim 2", "update 2 running", "claim 3",
                              "update 3 running"], "an echo of our own write was taken for news"
        assert sorted(c.number for c in n.docker.containers.values()) == [1, 2, 3]

        # a Docker event: the dead container is started again as it is (docker start), its record follows
        old = n.running()[2]
        n.docker.die(2)
        await n.until(lambda: n.etcd.log.count("update 2 running") == 2)
        assert n.running().get(2) == old and f"start again {old}" in n.docker.log
        assert sum(1 for c in n.docker.containers.values() if c.running) == 3

        # the watch is interrupted: the informer lists again; the same state means no action
        before = list(n.etcd.log)
        n.etcd.stream.put_nowait(WatchEvent(kind="resync"))
        await n.until(lambda: n.etcd.lists == 2)
        await asyncio.sleep(0.2)
        assert n.etcd.log == before

        # scale down: each key is released before its container is removed
        n.spec(1)
        await n.until(lambda: set(n.running()) == {1} and len(n.docker.containers) == 1)
        assert [n.informer.state.instances.get((WEB, number)) for number in (2, 3)] == [None, None]
        released = [e for e in n.etcd.log if e.startswith("release")]
        assert sorted(released) == ["release 2", "release 3"]


async def test_a_held_key_is_retried_when_the_planner_said_without_any_event() -> None:
    async with Node() as n:
        n.etcd.down = True
        n.spec(1)
        await n.until(lambda: bool(n.r.retries))  # the claim failed: the key is held (action backoff)
        n.etcd.down = False  # etcd is back, and nothing tells the loop so
        await n.until(lambda: n.running().keys() == {1}, limit=3.0)
        assert n.etcd.log == ["claim 1", "update 1 running"]


class SlowListing(EventedDocker):
    """The engine with a listing that takes ``delay`` seconds (as Docker's does with many containers)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.lists = 0

    async def list_managed(self) -> list[ContainerInfo]:
        self.lists += 1
        await asyncio.sleep(self.delay)
        return await super().list_managed()


async def test_a_stream_of_docker_events_relists_at_a_pace_and_still_sees_a_crash() -> None:
    """Each Docker event marks the listing stale; a listing that took t is not redone for
    RELIST_PACE * t (it was redone on every pass: with a container started every few ms on a
    node of 33 000 containers, the agent spent its time listing), and a crash among the events is
    still acted on."""
    docker = SlowListing(0.05)
    async with Node(docker) as n:
        n.r.relist_interval = 3600.0  # (no periodic listing: events only)
        n.spec(2)
        await n.until(lambda: len(n.running()) == 2)
        before = docker.lists
        for _ in range(100):  # 1 s of events, one every 10 ms
            docker.events.put_nowait("noise")
            await asyncio.sleep(0.01)
        listed = docker.lists - before
        assert listed <= 1.2 / (0.05 * (1 + RELIST_PACE)) + 1, f"{listed} listings for 1 s of events"
        old = n.running()[2]
        n.docker.die(2)
        await n.until(lambda: n.etcd.log.count("update 2 running") == 2)
        assert f"start again {old}" in n.docker.log
