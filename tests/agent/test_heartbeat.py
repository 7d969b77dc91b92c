"""The heartbeat against a fake lease store and a fake clock (pure logic of lease keeping)."""

from __future__ import annotations

import pytest

from daprdockr.agent.heartbeat import Heartbeat
from daprdockr.core.records import NodeRecord
from daprdockr.errors import LeaseLostError, StoreUnavailableError


class FakeLeases:
    """Leases as etcd keeps them: granted ids, keepalives, revokes, node records put on a lease."""

    def __init__(self) -> None:
        self.next_id = 100
        self.live: set[int] = set()
        self.nodes: list[tuple[str, int]] = []  # (node id, lease) of every put_node
        self.keepalives = 0
        self.fail: BaseException | None = None

    async def grant_lease(self, ttl: int) -> int:
        self.next_id += 1
        self.live.add(self.next_id)
        return self.next_id

    async def keepalive(self, lease_id: int, *, attempt_timeout: float | None = None) -> int:
        if self.fail is not None:
            raise self.fail
        if lease_id not in self.live:
            raise LeaseLostError("lease not found")
        self.keepalives += 1
        return 5

    async def revoke_lease(self, lease_id: int) -> int:
        self.live.discard(lease_id)
        return 42

    async def put_node(self, node: NodeRecord, *, lease: int) -> None:
        self.nodes.append((node.node_id, lease))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Beat = tuple[Heartbeat, "FakeLeases", "Clock", list[int]]


@pytest.fixture
def beat() -> Beat:
    store, clock, leases = FakeLeases(), Clock(), []
    hb = Heartbeat(store=store, node=NodeRecord(node_id="n1", address="127.0.0.11"), ttl=6,
                   on_new_lease=leases.append, clock=clock)
    return hb, store, clock, leases


async def test_register_publishes_the_node_on_a_new_lease(beat: Beat) -> None:
    hb, store, _, leases = beat
    lease = await hb.register()
    assert hb.lease == lease and leases == [lease] and store.nodes == [("n1", lease)] and hb.healthy


async def test_keepalives_write_nothing_and_keep_it_healthy(beat: Beat) -> None:
    hb, store, clock, _ = beat
    await hb.register()
    for _ in range(10):
        clock.now += hb.interval
        await hb.beat_once()
    assert store.keepalives == 10 and len(store.nodes) == 1, "an idle node writes only keepalives"
    assert hb.healthy


async def test_healthy_only_within_the_ttl_of_the_last_keepalive(beat: Beat) -> None:
    hb, store, clock, _ = beat
    await hb.register()
    store.fail = StoreUnavailableError("etcd down")
    clock.now += hb.ttl - 0.1
    with pytest.raises(StoreUnavailableError):
        await hb.beat_once()
    assert hb.healthy  # the lease may still be alive
    clock.now += 0.2
    assert not hb.healthy  # past the TTL: it may have expired; the agent stops claiming


async def test_a_lost_lease_is_replaced_and_reported(beat: Beat) -> None:
    hb, store, _, leases = beat
    old = await hb.register()
    store.live.discard(old)  # etcd expired it (we were cut off longer than the TTL)
    await hb.beat_once()
    assert hb.lease != old and leases == [old, hb.lease] and store.nodes[-1] == ("n1", hb.lease)
    assert hb.healthy


async def test_release_revokes_and_forgets_the_lease(beat: Beat) -> None:
    hb, store, _, _ = beat
    lease = await hb.register()
    assert await hb.release() == 42 and lease not in store.live and hb.lease == 0 and not hb.healthy
    assert await hb.release() == 0  # nothing to revoke
