"""The lease keeper against a real etcd: a lease outlives a blocked agent loop, but not a stuck one.

Measured before it (bench/hollow_bench.py, 3 hollow agents x 100 000 on a loaded 2-core host):
keepalives sent from a loop seconds behind its events came late, leases expired 61 times and the
cluster never converged.  Here the agent's loop is blocked outright (``time.sleep``) for longer
than the lease's TTL: a keepalive from the loop cannot save it, the keeper's thread does.
"""

from __future__ import annotations

import asyncio
import time

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.lease_keeper import LeaseKeeper
from daprdockr.agent.heartbeat import Heartbeat
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.records import NodeRecord

TTL = 2


def keeper_for(etcd_endpoints: str, prefix: str, *, stall_limit: float | None = None) -> LeaseKeeper:
    return LeaseKeeper(connect=lambda: EtcdStore(endpoints=parse_endpoints(etcd_endpoints), schema=KeySchema(prefix),
                                                 timeout=3.0), ttl=TTL, stall_limit=stall_limit)


async def alive(store: EtcdStore, lease: int) -> bool:
    try:
        await store.keepalive(lease)
    except Exception:
        return False
    return True


async def test_a_lease_outlives_a_blocked_loop_only_with_the_keeper(store: EtcdStore, etcd_endpoints: str,
                                                                    prefix: str) -> None:
    bare = await store.grant_lease(TTL)
    kept = await store.grant_lease(TTL)
    keeper = keeper_for(etcd_endpoints, prefix)
    keeper.start()
    try:
        keeper.track(kept)
        await asyncio.sleep(0.5)
        time.sleep(TTL + 1.5)  # the agent's loop blocked longer than the TTL (a pass, a starved host)
        assert not await alive(store, bare), "the lease without a keeper should have expired"
        assert await alive(store, kept), "the keeper's thread should have kept the lease alive"
        assert keeper.last_ok > 0 and keeper.lost == 0
    finally:
        await asyncio.to_thread(keeper.stop)


async def test_a_stuck_loop_loses_its_lease_after_the_stall_limit(store: EtcdStore, etcd_endpoints: str,
                                                                  prefix: str) -> None:
    lease = await store.grant_lease(TTL)
    keeper = keeper_for(etcd_endpoints, prefix, stall_limit=1.0)
    keeper.start()
    try:
        keeper.track(lease)
        await asyncio.sleep(1.0 + TTL + 1.0)  # nobody touches: renewing stops after 1 s, the TTL runs out
        assert not await alive(store, lease)
    finally:
        await asyncio.to_thread(keeper.stop)


async def test_the_heartbeat_checks_in_and_registers_again_when_the_keeper_saw_the_lease_go(
        store: EtcdStore, etcd_endpoints: str, prefix: str) -> None:
    keeper = keeper_for(etcd_endpoints, prefix)
    leases: list[int] = []
    beat = Heartbeat(store=store, node=NodeRecord(node_id="k1", address="127.0.0.11"), ttl=TTL,
                     on_new_lease=leases.append, keeper=keeper)
    keeper.start()
    try:
        first = await beat.register()
        assert keeper.lease == first
        await asyncio.sleep(1.0)
        await beat.beat_once()
        assert beat.healthy and beat.last_ok >= keeper.last_ok > 0
        await store.revoke_lease(first)  # gone behind the agent's back
        deadline = time.monotonic() + 3 * TTL
        while keeper.lost != first:
            assert time.monotonic() < deadline, "the keeper did not see the lease go"
            await asyncio.sleep(0.1)
        await beat.beat_once()  # the loop learns it from the keeper: a new lease, the node record on it
        assert beat.lease not in (0, first) and leases == [first, beat.lease] and keeper.lease == beat.lease
        assert "k1" in (await store.snapshot()).nodes
        await beat.release()
        assert keeper.lease == 0
    finally:
        await asyncio.to_thread(keeper.stop)


async def test_stop_ends_the_thread_at_once_whatever_the_interval(etcd_endpoints: str, prefix: str) -> None:
    keeper = LeaseKeeper(connect=lambda: EtcdStore(endpoints=parse_endpoints(etcd_endpoints), schema=KeySchema(prefix),
                                                   timeout=3.0), ttl=60)  # (a pause of 20 s between keepalives)
    keeper.start()
    await asyncio.sleep(1.0)  # (connected and pausing)
    await asyncio.to_thread(keeper.stop, timeout=5.0)
    assert not keeper.running
