"""The reconciler driven by simulated etcd and Docker event streams (fakes; pure logic, fast).

Modelled on kopf's reactor tests: a fake etcd with real compare-and-set semantics feeds its
events to the reconciler's mirror (as the agent's informer does), a fake Docker engine records
every operation, and each test drives ``reconcile_once`` step by step and checks what happened,
and in which order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest

from daprdockr.core.containers import ContainerInfo
from daprdockr.core.keys import KeySchema
from daprdockr.core.mirror import StateMirror, WatchEvent
from daprdockr.core.model import Health, InstanceRecord, NodeRecord, ServiceSpec, dumps
from daprdockr.core.names import ServiceName
from daprdockr.core.rollout import Slot
from daprdockr.errors import ContainerError, StoreUnavailableError
from daprdockr.reconcile import Reconciler

WEB = ServiceName(group="myapp", service="web")
SCHEMA = KeySchema("/t")
LEASE = 0x11


@dataclass
class Kv:
    value: bytes
    lease: int
    create: int
    mod: int


@dataclass
class FakeEtcd:
    """Compare-and-set semantics of the instance writes, and a watch stream into the mirror."""

    mirror: StateMirror
    kvs: dict[str, Kv] = field(default_factory=dict)
    revision: int = 1
    down: bool = False
    log: list[str] = field(default_factory=list)

    def _commit(self, key: str, value: bytes | None, lease: int = 0) -> WatchEvent:
        self.revision += 1
        if value is None:
            self.kvs.pop(key, None)
            return WatchEvent(kind="delete", key=key, revision=self.revision)
        old = self.kvs.get(key)
        created = old.create if old else self.revision
        self.kvs[key] = Kv(value=value, lease=lease, create=created, mod=self.revision)
        return WatchEvent(kind="put", key=key, value=value, revision=self.revision, lease=lease,
                          create_revision=created)

    def external(self, key: str, value: bytes | None, lease: int = 0) -> None:
        """A write by someone else, delivered by the watch."""
        self.mirror.apply(self._commit(key, value, lease))

    def _check(self, what: str) -> None:
        if self.down:
            raise StoreUnavailableError(f"etcd {what}: unreachable (simulated)")

    async def claim_instance(self, rec: InstanceRecord, *, lease: int) -> WatchEvent | None:
        self._check("claim")
        key = SCHEMA.instance(rec.service, rec.number)
        if key in self.kvs:
            return None
        self.log.append(f"claim {rec.number}")
        return self._commit(key, dumps(rec.to_dict()), lease)

    async def update_instance(self, rec: InstanceRecord, *, lease: int) -> WatchEvent | None:
        self._check("update")
        key = SCHEMA.instance(rec.service, rec.number)
        kv = self.kvs.get(key)
        if kv is None or kv.create != rec.create_revision:
            return None
        self.log.append(f"update {rec.number} {rec.state}")
        return self._commit(key, dumps(rec.to_dict()), lease)

    async def release_instance(self, rec: InstanceRecord) -> WatchEvent | None:
        self._check("release")
        key = SCHEMA.instance(rec.service, rec.number)
        kv = self.kvs.get(key)
        if kv is None or kv.create != rec.create_revision:
            return None
        self.log.append(f"release {rec.number}")
        return self._commit(key, None)

    async def take_over_instance(self, rec: InstanceRecord, *, lease: int) -> WatchEvent | None:
        self._check("take over")
        key = SCHEMA.instance(rec.service, rec.number)
        kv = self.kvs.get(key)
        if kv is None or kv.mod != rec.mod_revision:
            return None
        self.log.append(f"take over {rec.number}")
        return self._commit(key, dumps(rec.to_dict()), lease)

    async def purge_instance(self, *, key: str, mod_revision: int) -> WatchEvent | None:
        self._check("purge")
        kv = self.kvs.get(key)
        if kv is None or kv.mod != mod_revision:
            return None
        self.log.append(f"purge {key.rsplit('/', 1)[1]}")
        return self._commit(key, None)


@dataclass
class FakeDocker:
    containers: dict[str, ContainerInfo] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    starts: int = 0
    refuse_start: bool = False

    async def list_managed(self) -> list[ContainerInfo]:
        return list(self.containers.values())

    async def start_instance(self, *, spec: ServiceSpec, number: int, beside: bool = False) -> ContainerInfo:
        if self.refuse_start:
            raise ContainerError("image not found (simulated)", transient=False)
        self.starts += 1
        c = ContainerInfo(id=f"c{self.starts}", service=spec.name, number=number, node="n1",
                          spec_hash=spec.runtime_hash, running=True, ports=(("8080/tcp", 30000 + self.starts),),
                          created=float(self.starts))
        self.containers[c.id] = c
        self.log.append(f"start {number} {c.id}")
        return c

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        return self.containers.get(container_id)

    async def drain(self, container: ContainerInfo, *, within: float) -> int:
        return 0

    async def remove(self, container_id: str, *, grace: float, signal: str | None = None) -> None:
        self.containers.pop(container_id, None)
        self.log.append(f"remove {container_id}")

    def die(self, number: int) -> None:
        """A Docker event: the container of ``number`` exited."""
        for cid, c in self.containers.items():
            if c.number == number:
                self.containers[cid] = replace(c, running=False)


@dataclass
class FakeSlots:
    """The rollout coordinator: ``free`` slots, failures recorded."""

    log: list[str]
    free: int = 1
    held: int = 0
    failed: list[tuple[ServiceName, bool]] = field(default_factory=list)

    async def take_slot(self, name: ServiceName, *, parallel: int, slot: Slot, lease: int) -> int:
        if self.held >= min(self.free, parallel):
            return 0
        self.held += 1
        self.log.append(f"slot {self.held} taken")
        return self.held

    async def release_slot(self, name: ServiceName, index: int) -> None:
        self.held -= 1
        self.log.append(f"slot {index} released")

    async def fail_rollout(self, name: ServiceName, *, target: str, reason: str, rollback: bool) -> str:
        self.failed.append((name, rollback))
        return "rolled-back" if rollback else "paused"


class NeverHealthy:
    def health_of(self, container: ContainerInfo, spec: ServiceSpec) -> Health:
        return ""

    def restart_due(self, container: ContainerInfo, spec: ServiceSpec) -> bool:
        return False

    async def probe(self, container: ContainerInfo, spec: ServiceSpec) -> bool:
        return False


class World:
    def __init__(self) -> None:
        self.mirror = StateMirror(schema=SCHEMA)
        self.etcd = FakeEtcd(self.mirror)
        self.docker = FakeDocker()
        self.now = 100.0
        self.slots = FakeSlots(self.etcd.log)
        self.r = Reconciler(node_id="n1", address="127.0.0.11", store=self.etcd, runtime=self.docker,
                            mirror=self.mirror, clock=lambda: self.now, rand=lambda: 0.5,
                            on_written=self.mirror.apply, rollouts=self.slots)
        self.r.lease = LEASE
        self.r.claiming = True
        self.etcd.external(SCHEMA.node("n1"), json.dumps(NodeRecord(node_id="n1", address="127.0.0.11").to_dict())
                           .encode(), LEASE)

    def spec(self, instances: int, **extra: object) -> ServiceSpec:
        spec = ServiceSpec.from_dict({"image": "busybox", "instances": instances, "http_port": 8080, **extra},
                                     name=WEB)
        self.etcd.external(SCHEMA.service(WEB), dumps(spec.to_dict()))
        return spec

    async def settle(self, passes: int = 6) -> None:
        """Reconcile passes until no action is in flight (each pass re-lists Docker, as events would)."""
        for _ in range(passes):
            self.r.mark_containers_dirty()
            await self.r.reconcile_once()
            for _ in range(20):
                await asyncio.sleep(0)

    async def settle_until(self, done: Callable[[], bool], *, limit: float = 5.0) -> None:
        """Reconcile passes (with real time passing) until ``done()``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + limit
        while not done():
            assert loop.time() < end, "condition not reached"
            await self.settle(passes=1)
            await asyncio.sleep(0.02)

    def running(self) -> dict[int, str]:
        return {r.number: r.container_id for r in self.mirror.state().instances_of(WEB) if r.state == "running"}


async def test_a_spec_event_claims_starts_and_reports_running() -> None:
    w = World()
    w.spec(2)
    await w.settle()
    assert w.running() == {1: "c1", 2: "c2"}
    assert w.etcd.log == ["claim 1", "update 1 running", "claim 2", "update 2 running"]


async def test_losing_the_race_starts_nothing() -> None:
    w = World()
    w.etcd.external(SCHEMA.node("n2"), json.dumps({"address": "127.0.0.12"}).encode(), 0x22)
    spec = w.spec(1)
    rec = InstanceRecord(service=WEB, number=1, node="n2", address="127.0.0.12", state="running",
                         spec_hash=spec.runtime_hash)
    w.etcd.kvs[SCHEMA.instance(WEB, 1)] = Kv(value=dumps(rec.to_dict()), lease=0x22, create=50, mod=50)  # not yet seen
    await w.settle()
    assert w.docker.log == [] and w.etcd.log == []


async def test_a_dead_container_is_restarted_and_the_record_follows() -> None:
    w = World()
    w.spec(1)
    await w.settle()
    w.docker.die(1)
    await w.settle()
    assert w.docker.log == ["start 1 c1", "remove c1", "start 1 c2"]
    assert w.running() == {1: "c2"}


async def test_scale_down_releases_in_etcd_before_stopping() -> None:
    w = World()
    w.spec(3)
    await w.settle()
    w.etcd.log.clear()
    w.docker.log.clear()
    order: list[str] = []
    w.etcd.log = order
    w.docker.log = order
    w.spec(1)
    await w.settle()
    assert order.index("release 3") < order.index("remove c3")
    assert order.index("release 2") < order.index("remove c2")
    assert w.running() == {1: "c1"}


async def test_while_etcd_is_down_a_scale_down_stops_nothing() -> None:
    w = World()
    w.spec(2)
    await w.settle()
    w.spec(1)
    w.etcd.down = True
    await w.settle()
    assert "c2" in w.docker.containers, "stopped without etcd's confirmation"
    w.etcd.down = False
    w.now += 10  # past the failed action's hold
    await w.settle()
    assert "c2" not in w.docker.containers and w.running() == {1: "c1"}


FAST = {"min_healthy": 0, "deadline": "300ms"}


async def test_start_first_update_points_the_record_at_the_replacement_before_stopping_the_old() -> None:
    w = World()
    w.spec(1, update=FAST)
    await w.settle()
    order: list[str] = []
    w.etcd.log = w.docker.log = w.slots.log = order
    w.spec(1, env={"A": "1"}, update=FAST)
    await w.settle()
    assert order == ["slot 1 taken", "start 1 c2", "update 1 running", "slot 1 released", "remove c1"]
    assert w.running() == {1: "c2"}


async def test_stop_first_update_takes_the_old_out_before_starting() -> None:
    w = World()
    stop_first = {**FAST, "order": "stop-first"}
    w.spec(1, update=stop_first)
    await w.settle()
    order: list[str] = []
    w.etcd.log = w.docker.log = w.slots.log = order
    w.spec(1, env={"A": "1"}, update=stop_first)
    await w.settle()
    assert order[:4] == ["slot 1 taken", "update 1 starting", "remove c1", "start 1 c2"]
    assert order[-1] == "slot 1 released" and w.running() == {1: "c2"}


async def test_no_free_slot_no_replacement() -> None:
    w = World()
    w.spec(1, update=FAST)
    await w.settle()
    w.slots.free = 0
    w.spec(1, env={"A": "1"}, update=FAST)
    await w.settle()
    assert w.running() == {1: "c1"} and w.docker.starts == 1


async def test_a_replacement_that_never_gets_healthy_fails_the_rollout_and_the_old_one_stays() -> None:
    w = World()
    w.spec(1, update=FAST)
    await w.settle()
    w.r.health = NeverHealthy()
    w.spec(1, env={"A": "1"}, update=FAST)
    await w.settle_until(lambda: bool(w.slots.failed))
    await w.settle()
    assert w.slots.failed == [(WEB, True)]
    assert w.running() == {1: "c1"} and "c1" in w.docker.containers and "c2" not in w.docker.containers
    assert w.slots.held == 0  # released after the failure


async def test_takeover_from_a_draining_node_moves_the_key_onto_our_lease() -> None:
    w = World()
    spec = w.spec(1, update=FAST)
    w.etcd.external(SCHEMA.node("n2"), json.dumps({"address": "127.0.0.12"}).encode(), 0x22)
    rec = InstanceRecord(service=WEB, number=1, node="n2", address="127.0.0.12", state="running",
                         spec_hash=spec.runtime_hash, container_id="x", ports=(("8080/tcp", 31000),))
    w.etcd.external(SCHEMA.instance(WEB, 1), dumps(rec.to_dict()), 0x22)
    await w.settle()
    assert w.docker.starts == 0  # held by a live node that is not draining
    w.etcd.external(SCHEMA.drain("n2"), b'{"by": "operator"}')
    await w.settle()
    (moved,) = w.mirror.state().instances_of(WEB)
    assert (moved.node, moved.lease, moved.container_id) == ("n1", LEASE, "c1")
    assert "take over 1" in w.etcd.log


@pytest.mark.parametrize("terminal", [True, False])
async def test_the_planner_says_when_to_retry_a_failed_start(terminal: bool) -> None:
    w = World()
    w.docker.refuse_start = True
    w.spec(1)
    if not terminal:
        w.docker.start_instance = _transient_failure  # type: ignore[method-assign]
    await w.settle()
    delay = w.r._next_wake - w.now
    assert delay == pytest.approx(30.0 if terminal else 0.5, rel=0.01)
    w.docker.refuse_start = False
    w.docker.start_instance = FakeDocker.start_instance.__get__(w.docker)  # type: ignore[method-assign]
    await w.settle()
    assert w.running() == {}  # held back until then
    w.now += delay + 0.01
    await w.settle()
    assert w.running() == {1: "c1"}


async def _transient_failure(*, spec: ServiceSpec, number: int, beside: bool = False) -> ContainerInfo:
    raise ContainerError("engine busy (simulated)", transient=True)
