"""The reconciler driven by simulated etcd and Docker event streams (fakes; pure logic, fast).

Modelled on kopf's reactor tests: a fake etcd with real compare-and-set semantics feeds its
events to the reconciler's mirror (as the agent's informer does), a fake Docker engine records
every operation, and each test drives ``reconcile_once`` step by step and checks what happened,
and in which order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.lifecycle_store import LifecycleStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.containers import ContainerInfo
from daprdockr.core.health import PerContainerHealth
from daprdockr.core.jsondata import dumps
from daprdockr.core.keys import KeySchema
from daprdockr.core.local_view import local_view
from daprdockr.core.mirror import StateMirror, WatchEvent
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import Health, InstanceRecord, NodeRecord
from daprdockr.core.removal import KeyEvent
from daprdockr.core.retry import KeyRetry
from daprdockr.core.rollout import RolloutRecord, Slot
from daprdockr.errors import ContainerError, DaprDockrError, RuntimeUnavailableError, StoreUnavailableError
from daprdockr.health import HealthMonitor
from daprdockr.reconcile import Reconciler
from tests.test_health_monitor import NoExec

WEB = ServiceName(group="myapp", service="web")
T = TypeVar("T")
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
    history: dict[str, list[KeyEvent]] = field(default_factory=dict)

    def _commit(self, key: str, value: bytes | None, lease: int = 0) -> WatchEvent:
        self.revision += 1
        self.history.setdefault(key, []).append(KeyEvent(revision=self.revision, value=value))
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

    async def instance_history(self, service: ServiceName, number: int, *, until: int) -> list[KeyEvent]:
        self._check("history")
        return [e for e in self.history.get(SCHEMA.instance(service, number), []) if e.revision <= until]

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
    start_error: DaprDockrError | None = None  # raised by every start while set
    start_attempts: int = 0

    async def list_managed(self) -> list[ContainerInfo]:
        return list(self.containers.values())

    async def restart_instance(self, container: ContainerInfo, *, spec: ServiceSpec) -> ContainerInfo:
        if self.start_error is not None:
            self.log.append(f"start again {container.id} failed")
            raise self.start_error
        if container.id not in self.containers:
            raise ContainerError(f"no such container {container.id}", transient=False)
        self.starts += 1
        again = replace(self.containers[container.id], running=True, ports=(("8080/tcp", 30000 + self.starts),))
        self.containers[container.id] = again
        self.log.append(f"start again {container.id}")
        return again

    async def start_instance(self, *, spec: ServiceSpec, number: int, beside: bool = False) -> ContainerInfo:
        self.start_attempts += 1
        if self.start_error is not None:
            self.log.append(f"start {number} failed")
            raise self.start_error
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
    """The rollout coordinator on the fake etcd: slot keys with create revisions (compared on every
    write, as the real transactions do), seen by the mirror; ``free`` caps the slots; failures are
    recorded and pause the rollout (a rollout record the planner sees)."""

    etcd: FakeEtcd
    free: int = 1
    failed: list[tuple[ServiceName, bool]] = field(default_factory=list)
    lost_reply: int = 0  # the next takes commit, but their caller hears "all taken" (a retried call)

    @property
    def log(self) -> list[str]:
        return self.etcd.log

    @property
    def held(self) -> int:
        return sum(1 for k in self.etcd.kvs if k.startswith(SCHEMA.slot(WEB, 1).rsplit("/", 1)[0] + "/"))

    def slots(self) -> dict[int, Slot]:
        return dict(self.etcd.mirror.state().slots.get(WEB, {}))

    async def take_slot(self, name: ServiceName, *, parallel: int, slot: Slot, lease: int) -> tuple[int, int]:
        for index in range(1, min(self.free, parallel) + 1):
            key = SCHEMA.slot(name, index)
            if key not in self.etcd.kvs:
                ev = self.etcd._commit(key, dumps(slot.to_dict()), lease)
                self.etcd.mirror.apply(ev)
                self.log.append(f"slot {index} taken")
                if self.lost_reply:
                    self.lost_reply -= 1
                    return 0, 0
                return index, ev.revision
        return 0, 0

    def _ours(self, name: ServiceName, index: int, create_revision: int) -> str | None:
        key = SCHEMA.slot(name, index)
        kv = self.etcd.kvs.get(key)
        return key if kv is not None and kv.create == create_revision else None

    async def mark_slot_failed(self, name: ServiceName, index: int, *, slot: Slot, lease: int) -> bool:
        key = self._ours(name, index, slot.create_revision)
        if key is None:
            return False
        self.etcd.mirror.apply(self.etcd._commit(key, dumps(slot.to_dict()), lease))
        self.log.append(f"slot {index} failed")
        return True

    async def release_slot(self, name: ServiceName, index: int, *, create_revision: int) -> bool:
        key = self._ours(name, index, create_revision)
        if key is None:
            return False
        self.etcd.mirror.apply(self.etcd._commit(key, None))
        self.log.append(f"slot {index} released")
        return True

    async def fail_rollout(self, name: ServiceName, *, target: str, reason: str, rollback: bool) -> str:
        self.failed.append((name, rollback))
        self.etcd.external(SCHEMA.rollout(name), dumps(RolloutRecord(version=2, target=target, state="paused",
                                                                     reason=reason).to_dict()))
        return "paused"


class NeverHealthy(PerContainerHealth):
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
        self.slots = FakeSlots(self.etcd)
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


async def test_a_dead_container_is_started_again_as_it_is_and_the_record_follows() -> None:
    """(Issue 23: a dockerd restart stops every container; each comes back as it was, docker start,
    instead of being removed and re-created.)"""
    w = World()
    w.spec(1)
    await w.settle()
    w.docker.die(1)
    await w.settle()
    assert w.docker.log == ["start 1 c1", "start again c1"]
    assert w.running() == {1: "c1"}
    assert w.mirror.state().instances[(WEB, 1)].port_for(8080) == 30002  # (its ports as Docker gave them again)


async def test_a_crash_loop_gets_a_new_container_and_a_failed_docker_start_keeps_the_old_one() -> None:
    w = World()
    w.spec(1)
    await w.settle()
    for _ in range(2):  # exits soon after its start, twice in a row: started again as it is
        w.docker.die(1)
        w.now += 5  # past the crash backoff
        await w.settle()
    assert w.docker.log == ["start 1 c1", "start again c1", "start again c1"]
    w.docker.die(1)  # a third time: a crash loop gets a new container
    w.now += 5
    await w.settle()
    assert w.docker.log[3:] == ["remove c1", "start 1 c4"]
    w.docker.log.clear()
    w.now += 60  # a stable run
    w.docker.die(1)
    w.docker.start_error = RuntimeUnavailableError("the engine is away (simulated)")
    w.now += 5
    await w.settle()
    assert w.docker.log and set(w.docker.log) == {"start again c4 failed"} and "c4" in w.docker.containers
    w.docker.start_error = None
    w.now += 20  # the engine is back within START_AGAIN_FOR: the same container runs again
    await w.settle()
    assert w.docker.log[-1] == "start again c4" and w.running() == {1: "c4"}
    w.docker.log.clear()
    w.now += 60
    w.docker.die(1)
    w.docker.start_error = ContainerError("cannot start (simulated)", transient=True)
    for _ in range(3):  # refused for 3 s by an engine that answers: replaced
        w.now += 5
        await w.settle()
    w.docker.start_error = None
    w.now += 10
    await w.settle()
    assert "remove c4" in w.docker.log and list(w.running().values()) != ["c4"] and w.running(), w.docker.log


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
    w.etcd.log = w.docker.log = order
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
    w.etcd.log = w.docker.log = order
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


@pytest.fixture
def quick_start_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("daprdockr.reconcile.START_RETRY", 0.01)


NO_IMAGE = ContainerError("image busybox:nope is not available: manifest unknown (simulated)", transient=True)


@pytest.mark.usefixtures("quick_start_retries")
async def test_a_start_first_replacement_that_cannot_start_fails_the_rollout_and_the_old_one_serves() -> None:
    w = World()
    w.spec(1, update={"min_healthy": 0, "deadline": "5s"})
    await w.settle()
    w.docker.start_error = NO_IMAGE  # a pull of a missing tag fails as a transient error
    w.spec(1, image="busybox:nope", update={"min_healthy": 0, "deadline": "5s"})
    await w.settle_until(lambda: bool(w.slots.failed))
    await w.settle()
    assert w.slots.failed == [(WEB, True)]  # reported once, after START_ATTEMPTS starts
    assert w.docker.start_attempts == 1 + 3
    assert "slot 1 failed" in w.etcd.log and w.slots.held == 0
    assert w.running() == {1: "c1"} and "c1" in w.docker.containers
    await w.settle()
    assert w.docker.start_attempts == 4  # the rollout is decided (paused here): no new try


@pytest.mark.usefixtures("quick_start_retries")
async def test_a_stop_first_replacement_that_cannot_start_takes_down_one_instance_only() -> None:
    w = World()
    policy = {"order": "stop-first", "min_healthy": 0, "deadline": "5s"}
    w.spec(3, update=policy)
    await w.settle()
    assert w.running() == {1: "c1", 2: "c2", 3: "c3"}
    w.docker.start_error = NO_IMAGE
    w.spec(3, image="busybox:nope", update=policy)
    await w.settle_until(lambda: bool(w.slots.failed))
    for _ in range(3):
        w.now += 60  # past every hold and backoff
        await w.settle()
    assert w.slots.failed == [(WEB, True)]
    removed = [line for line in w.docker.log if line.startswith("remove")]
    assert removed == ["remove c1"], w.docker.log  # the next instances were never taken out
    assert w.running() == {2: "c2", 3: "c3"}


async def test_a_failed_replacement_keeps_its_slot_marked_until_the_rollout_is_told() -> None:
    w = World()
    policy = {**FAST, "parallel": 2}
    w.spec(2, update=policy)
    await w.settle()
    w.slots.free = 2
    w.r.health = NeverHealthy()
    told: list[str] = []

    async def etcd_down(name: ServiceName, *, target: str, reason: str, rollback: bool) -> str:
        told.append(reason)
        raise StoreUnavailableError("etcd fail rollout: unreachable (simulated)")

    w.slots.fail_rollout = etcd_down  # type: ignore[method-assign]
    w.r.retries[(WEB, 2)] = KeyRetry(hold="all", not_before=w.now + 1)  # instance 2 rolls only later
    new = w.spec(2, env={"A": "1"}, update=policy)
    w.etcd.external(SCHEMA.rollout(WEB), dumps(RolloutRecord(version=2, target=new.runtime_hash).to_dict()))
    await w.settle_until(lambda: len(told) >= 1)
    await w.settle()
    (slot,) = w.slots.slots().values()
    assert slot.failed.startswith("instance 1 on n1: ") and "not healthy" in slot.failed
    w.now += 2  # instance 2 may act now, and a slot is free: but a replacement towards this version failed
    await w.settle()
    assert w.docker.log == ["start 1 c1", "start 2 c2", "start 1 c3", "remove c3"]
    assert w.running() == {1: "c1", 2: "c2"}
    del w.slots.fail_rollout  # etcd is back: the failure is reported, then the slot goes
    await w.settle()
    assert w.slots.failed == [(WEB, True)] and w.slots.held == 0


async def test_a_slot_taken_by_a_call_whose_reply_was_lost_is_released_and_the_rollout_moves() -> None:
    w = World()
    w.spec(1, update=FAST)
    await w.settle()
    w.slots.lost_reply = 1  # the take commits, the retried call finds the slot taken: "none free"
    w.spec(1, env={"A": "1"}, update=FAST)
    await w.settle_until(lambda: w.running() == {1: "c2"})
    assert w.etcd.log.count("slot 1 taken") == 2 and w.slots.held == 0


async def test_leftover_slots_are_released_only_if_still_the_one_we_took() -> None:
    w = World()
    w.spec(2, update=FAST)
    await w.settle()
    w.slots.free = 2
    # slot 1: ours, left by a release that failed; slot 2: taken by n2 since (same instance number)
    mine = Slot(node="n1", instance=1, target="x")
    w.etcd.external(SCHEMA.slot(WEB, 1), dumps(mine.to_dict()), LEASE)
    w.etcd.external(SCHEMA.slot(WEB, 2), dumps(Slot(node="n2", instance=1, target="x").to_dict()), 0x22)
    await w.settle()
    assert set(w.slots.slots()) == {2}
    assert w.slots.slots()[2].node == "n2"


@pytest.mark.etcd
async def test_on_real_etcd_a_slot_taken_by_a_call_whose_reply_was_lost_does_not_stall_the_rollout(
    store: EtcdStore,
) -> None:
    """The take transaction commits, then the reply is lost (injected into the store's call): the
    slot sits on our lease although no replacement holds it; a later pass releases it."""
    mirror = StateMirror(schema=store.schema)
    docker = FakeDocker()
    lease = await store.grant_lease(30)
    r = Reconciler(node_id="n1", address="127.0.0.11", store=store, runtime=docker, mirror=mirror,
                   on_written=mirror.apply, rollouts=LifecycleStore(store))
    r.lease, r.claiming = lease, True
    await store.put_node(NodeRecord(node_id="n1", address="127.0.0.11"), lease=lease)
    call = store._call
    lost: list[str] = []

    async def lossy(op: Callable[[Any], Awaitable[T]], *, what: str, attempt_timeout: float | None = None) -> T:
        if what == "take slot" and not lost:
            lost.append(what)

            async def committed_then_lost(client: Any) -> T:
                await op(client)
                raise ConnectionResetError("reply lost (injected)")

            return await call(committed_then_lost, what=what, attempt_timeout=attempt_timeout)
        return await call(op, what=what, attempt_timeout=attempt_timeout)

    store._call = lossy  # type: ignore[method-assign]

    async def converge(done: Callable[[], bool]) -> None:
        for _ in range(200):
            kvs, revision = await store.read_prefix(store.schema.root)
            mirror.reset(kvs, revision=revision)
            if done():
                return
            await r.reconcile_once()
            await asyncio.sleep(0.05)
        raise AssertionError(f"not converged: {mirror.state().instances}, slots {mirror.state().slots}")

    def runs(spec: ServiceSpec) -> Callable[[], bool]:
        return lambda: [(x.state, x.spec_hash) for x in mirror.state().instances_of(WEB)] == [
            ("running", spec.runtime_hash)] and not mirror.state().slots.get(WEB)

    old = ServiceSpec.from_dict({"image": "busybox", "http_port": 8080, "update": FAST}, name=WEB)
    await VersionStore(store).put_service(old)
    await converge(runs(old))
    new = ServiceSpec.from_dict({"image": "busybox", "http_port": 8080, "update": FAST, "env": {"A": "1"}}, name=WEB)
    await VersionStore(store).put_service(new)
    await converge(runs(new))
    assert lost == ["take slot"]
    await r.cancel_all()


@pytest.mark.parametrize("change", ["paused", "rolled back", "new lease"])
async def test_a_replacement_in_flight_gives_up_early_when_it_has_no_point_any_more(change: str) -> None:
    w = World()
    slow = {"min_healthy": 0, "deadline": "60s"}
    w.spec(1, update=slow)
    await w.settle()
    w.r.health = NeverHealthy()
    new = w.spec(1, env={"A": "1"}, update=slow)
    await w.settle_until(lambda: "start 1 c2" in w.docker.log)
    if change == "paused":  # another agent's replacement failed and the policy says pause
        w.etcd.external(SCHEMA.rollout(WEB), dumps(RolloutRecord(version=2, target=new.runtime_hash,
                                                                 state="paused").to_dict()))
    elif change == "rolled back":
        w.spec(1, update=slow)
    else:  # the lease was lost and replaced: the slot went with it
        w.r.lease = 0x99
    await w.settle_until(lambda: "remove c2" in w.docker.log)  # long before the 60s deadline
    await w.settle()
    assert w.slots.failed == []  # not this version's failure: nothing reported
    assert "c1" in w.docker.containers and "c2" not in w.docker.containers
    # abandoned is not failed: the key is not held back.  Paused or rolled back, nothing more is
    # replaced; on a new lease the spec still wants the new version, so a new replacement starts
    assert w.slots.held == (1 if change == "new lease" else 0)


async def test_an_agent_restart_keeps_the_recorded_health_until_the_first_check() -> None:
    """A restarted agent adopts its running containers on its new lease before any check ran: a
    healthy instance stays healthy in etcd (and routed) instead of turning ``starting``."""
    w = World()
    spec = w.spec(1, health={"http": "/healthz", "port": 8080})
    w.r.health = HealthMonitor(runtime=NoExec(), address="127.0.0.11", containers=lambda: w.r.containers,
                               specs=lambda: w.mirror.state().services)  # not run: nothing checked yet
    c = ContainerInfo(id="c1", service=WEB, number=1, node="n1", spec_hash=spec.runtime_hash, running=True,
                      ports=(("8080/tcp", 30001),))
    w.docker.containers[c.id] = c
    rec = InstanceRecord(service=WEB, number=1, node="n1", address="127.0.0.11", state="running", ports=c.ports,
                         container_id=c.id, spec_hash=spec.runtime_hash, health="healthy")
    w.etcd.external(SCHEMA.instance(WEB, 1), dumps(rec.to_dict()), 0x10)  # our previous lease
    await w.settle()
    (now,) = w.mirror.state().instances_of(WEB)
    assert (now.lease, now.health, now.routable) == (LEASE, "healthy", True)
    assert "update 1 running" in w.etcd.log


class OldTurnsUnhealthy(PerContainerHealth):
    """The new version never passes its check; the old container's status is set by the test."""

    def __init__(self) -> None:
        self.old: Health | None = "healthy"

    def health_of(self, container: ContainerInfo, spec: ServiceSpec) -> Health | None:
        return self.old if container.spec_hash != spec.runtime_hash else None

    def restart_due(self, container: ContainerInfo, spec: ServiceSpec) -> bool:
        return False

    async def probe(self, container: ContainerInfo, spec: ServiceSpec) -> bool:
        return False


async def test_while_a_replacement_waits_the_old_container_health_still_reaches_its_record() -> None:
    w = World()
    slow = {"min_healthy": 0, "deadline": "60s"}
    w.spec(1, health={"http": "/healthz", "port": 8080}, update=slow)
    health = OldTurnsUnhealthy()
    w.r.health = health
    await w.settle()
    w.etcd.external(SCHEMA.instance(WEB, 1), dumps(replace(w.mirror.state().instances[(WEB, 1)],
                                                           health="healthy").to_dict()), LEASE)
    w.spec(1, health={"http": "/healthz", "port": 8080}, env={"A": "1"}, update=slow)
    await w.settle_until(lambda: "start 1 c2" in w.docker.log)
    health.old = "unhealthy"  # the old container fails its checks while its replacement waits
    await w.settle_until(lambda: w.mirror.state().instances[(WEB, 1)].health == "unhealthy")
    assert not w.mirror.state().instances[(WEB, 1)].routable and "c2" in w.docker.containers
    w.spec(1, health={"http": "/healthz", "port": 8080}, update=slow)  # rolled back: the replacement goes
    await w.settle_until(lambda: "remove c2" in w.docker.log)


async def test_stop_first_routes_the_replacement_only_after_min_healthy() -> None:
    """Without a check a stop-first replacement must still keep running for min_healthy before
    it is routed; the record names it at once (an agent restart adopts it), as ``starting``."""
    w = World()
    policy = {"order": "stop-first", "min_healthy": "0.5s", "deadline": "10s"}
    w.spec(1, update=policy)
    await w.settle()
    w.spec(1, env={"A": "1"}, update=policy)
    await w.settle_until(lambda: w.mirror.state().instances[(WEB, 1)].container_id == "c2")
    rec = w.mirror.state().instances[(WEB, 1)]
    assert (rec.state, rec.routable) == ("starting", False)
    await w.settle_until(lambda: w.mirror.state().instances[(WEB, 1)].routable)
    assert w.running() == {1: "c2"}


async def test_a_stop_first_deadline_starts_once_the_old_container_is_out() -> None:
    """Regression (seen in the rolling-update benchmark): a stop-first replacement's deadline ran
    from before the old container was taken out, so its confirmed removal and drain (about 2 s
    for nginx's idle connections) ate the new version's time and a good update was rolled back."""
    w = World()

    async def slow_drain(container: ContainerInfo, *, within: float) -> int:
        await asyncio.sleep(1.3)  # longer than the whole deadline below
        return 0

    w.docker.drain = slow_drain  # type: ignore[method-assign]
    update = {"order": "stop-first", "min_healthy": 0, "deadline": "1s"}
    w.spec(1, update=update)
    await w.settle()
    new = w.spec(1, env={"A": "1"}, update=update)
    await w.settle_until(lambda: any(c.spec_hash == new.runtime_hash and c.running
                                     for c in w.docker.containers.values())
                         and w.running().get(1, "") != "c1" and not w.r.inflight.busy(), limit=8)
    assert w.slots.failed == [], "a good update failed on the old container's drain time"


async def test_a_started_container_is_served_as_soon_as_its_record_says_running() -> None:
    """Finding (convergence benchmark, N = 50): one instance whose record said ``running`` was
    missing from its own node's nginx for 0.9 s.  The node's DNS and nginx serve its own
    instances only as the last Docker listing shows them (``local_view``), and that listing is
    re-read only on the next pass, after the engine answers (busy with the other creates)."""
    w = World()
    spec = w.spec(1)
    w.r.mark_containers_dirty()
    await w.r.reconcile_once()  # one listing (empty), then the claim and start run as a task
    for _ in range(50):
        await asyncio.sleep(0)
    assert w.running() == {1: "c1"}  # the record says running; no listing since
    served = local_view(w.mirror.state(), node_id="n1", routable=w.r.routable())
    assert [r.container_id for r in served.instances_of(WEB)] == ["c1"]
    assert spec.runtime_hash == served.instances_of(WEB)[0].spec_hash


async def test_a_listing_begun_before_a_start_does_not_drop_the_started_container() -> None:
    w = World()
    spec = w.spec(0)
    gate = asyncio.Event()

    async def slow_listing() -> list[ContainerInfo]:
        snapshot = list(w.docker.containers.values())  # what the engine had when asked
        await gate.wait()
        return snapshot

    created = ContainerInfo(id="c1", service=WEB, number=1, node="n1", spec_hash=spec.runtime_hash, running=False,
                            ports=(), created=1.0)
    w.docker.containers[created.id] = created  # created, not yet started, when the listing is asked

    w.docker.list_managed = slow_listing  # type: ignore[method-assign]
    w.r.mark_containers_dirty()
    listing = asyncio.create_task(w.r.reconcile_once())
    await asyncio.sleep(0)
    info = replace(created, running=True, ports=(("8080/tcp", 30001),))
    w.docker.containers[info.id] = info
    w.r.observe_started(info)
    gate.set()
    await listing
    assert list(w.r.routable()) == [info]
    # the next listing, begun after the start, is the truth again: a container gone is dropped
    w.docker.containers.pop(info.id, None)
    w.r.mark_containers_dirty()
    await w.r.reconcile_once()
    assert list(w.r.routable()) == []


async def test_a_container_another_node_holds_now_is_confirmed_at_the_revision_it_left_the_routes() -> None:
    """Regression (issue 23, finding 6): a restarted agent found a container whose key another node
    now held and waited 2 s for every agent to apply the *current* record's revision, which no
    agent ever published (they publish a revision only after a removal they routed: the old
    key's deletion).  The wait is now for the revision that took the container out of the routes."""
    w = World()
    confirmed: list[int] = []

    async def confirm(revision: int) -> None:
        confirmed.append(revision)

    w.r.confirm_removal = confirm
    w.spec(1)
    await w.settle()
    assert w.running() == {1: "c1"}
    key = SCHEMA.instance(WEB, 1)
    w.etcd.external(key, None)  # our lease expired while we were away: the key went
    left = w.etcd.revision
    w.etcd.external(SCHEMA.node("n2"), json.dumps({"address": "127.0.0.12"}).encode(), 0x22)
    theirs = InstanceRecord(service=WEB, number=1, node="n2", address="127.0.0.12", state="running",
                            container_id="x9", spec_hash=w.mirror.state().services[WEB].runtime_hash)
    w.etcd.external(key, dumps(theirs.to_dict()), 0x22)  # claimed by n2
    w.etcd.external(key, dumps(replace(theirs, health="").to_dict()), 0x22)  # and written again since
    await w.settle()
    assert "c1" not in w.docker.containers
    assert confirmed == [left], (confirmed, left, w.etcd.revision)


async def test_a_container_no_record_ever_routed_is_stopped_without_a_confirmation() -> None:
    w = World()
    confirmed: list[int] = []

    async def confirm(revision: int) -> None:
        confirmed.append(revision)

    w.r.confirm_removal = confirm
    spec = w.spec(1)
    w.docker.containers["c7"] = ContainerInfo(id="c7", service=WEB, number=1, node="n1", spec_hash="old",
                                              running=True, ports=(("8080/tcp", 30007),))
    w.etcd.external(SCHEMA.node("n2"), json.dumps({"address": "127.0.0.12"}).encode(), 0x22)
    theirs = InstanceRecord(service=WEB, number=1, node="n2", address="127.0.0.12", state="running",
                            container_id="x9", spec_hash=spec.runtime_hash)
    w.etcd.external(SCHEMA.instance(WEB, 1), dumps(theirs.to_dict()), 0x22)
    await w.settle()
    assert "c7" not in w.docker.containers and confirmed == []


async def test_a_cancellation_in_the_same_turn_as_a_change_still_ends_the_loop() -> None:
    """Python 3.11's ``wait_for`` returned normally when the dirty event was set in the loop turn
    the task was cancelled in, and the loop then waited forever: an agent shutting down hung."""
    w = World()
    task = asyncio.create_task(w.r.run())
    await asyncio.sleep(0.05)  # waiting for a change
    w.r.mark_dirty()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done and task.cancelled()
