"""The reconciler's crash-restart bookkeeping, driven with fakes and a fake clock (pure logic, fast).

A container that crashes once in a long while restarts at once every time: its failure count
resets after a healthy run, so it never drifts to the backoff cap.  A crash loop still backs off.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from daprdockr.core.backoff import Backoff
from daprdockr.core.containers import ContainerInfo
from daprdockr.core.jsondata import dumps
from daprdockr.core.keys import KeySchema
from daprdockr.core.mirror import StateMirror, WatchEvent
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from daprdockr.core.removal import KeyEvent
from daprdockr.core.restart_policy import RestartPolicy
from daprdockr.core.retry import RetryPolicy
from daprdockr.core.state import RawKV
from daprdockr.reconcile import Reconciler

WEB = ServiceName(group="myapp", service="web")
SPEC = ServiceSpec.from_dict({"image": "busybox", "instances": 1}, name=WEB)
LEASE = 0x77


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeStore:
    """Accepts every instance write and returns its event (the reconciler feeds it to the mirror)."""

    def __init__(self, mirror: StateMirror) -> None:
        self.mirror = mirror
        self.revision = 10

    def _put(self, rec: InstanceRecord, lease: int) -> WatchEvent:
        self.revision += 1
        return WatchEvent(kind="put", key=self.mirror.schema.instance(rec.service, rec.number),
                          value=dumps(rec.to_dict()), revision=self.revision, lease=lease,
                          create_revision=rec.create_revision or self.revision)

    async def claim_instance(self, rec: InstanceRecord, *, lease: int) -> WatchEvent | None:
        return self._put(rec, lease)

    async def update_instance(self, rec: InstanceRecord, *, lease: int) -> WatchEvent | None:
        return self._put(rec, lease)

    async def release_instance(self, rec: InstanceRecord) -> WatchEvent | None:
        self.revision += 1
        return WatchEvent(kind="delete", key=self.mirror.schema.instance(rec.service, rec.number),
                          revision=self.revision)

    async def instance_history(self, service: ServiceName, number: int, *, until: int) -> list[KeyEvent]:
        return []  # (no removal to confirm: these tests confirm nothing)

    async def purge_instance(self, *, key: str, mod_revision: int) -> WatchEvent | None:
        self.revision += 1
        return WatchEvent(kind="delete", key=key, revision=self.revision)


class FakeRuntime:
    def __init__(self) -> None:
        self.containers: dict[str, ContainerInfo] = {}
        self.starts = 0

    async def list_managed(self) -> list[ContainerInfo]:
        return list(self.containers.values())

    async def restart_instance(self, container: ContainerInfo, *, spec: ServiceSpec) -> ContainerInfo:
        self.starts += 1  # (started again as it is)
        again = replace(self.containers[container.id], running=True)
        self.containers[container.id] = again
        return again

    async def start_instance(self, *, spec: ServiceSpec, number: int, beside: bool = False) -> ContainerInfo:
        self.starts += 1
        c = ContainerInfo(id=f"c{self.starts}", service=spec.name, number=number, node="n1",
                          spec_hash=spec.runtime_hash, running=True, created=float(self.starts))
        self.containers[c.id] = c
        return c

    async def drain(self, container: ContainerInfo, *, within: float) -> int:
        return 0

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        return self.containers.get(container_id)

    async def remove(self, container_id: str, *, grace: float, signal: str | None = None) -> None:
        self.containers.pop(container_id, None)

    def crash_all(self, *, ran_for: float | None = None) -> None:
        """Every container exits; ``ran_for``: the run time the engine would report."""
        self.containers = {k: replace(c, running=False, ran_for=ran_for) for k, c in self.containers.items()}


def _setup(*, policy: RetryPolicy | None = None) -> tuple[Reconciler, FakeRuntime, Clock]:
    schema = KeySchema("/t")
    mirror = StateMirror(schema=schema)
    mirror.reset([RawKV(key=schema.service(WEB), value=dumps(SPEC.to_dict()), mod_revision=2)], revision=2)
    runtime, clock = FakeRuntime(), Clock()
    r = Reconciler(node_id="n1", address="127.0.0.11", store=FakeStore(mirror), runtime=runtime, mirror=mirror,
                   clock=clock, on_written=mirror.apply)
    r.lease = LEASE
    r.claiming = True
    if policy is not None:
        r.policy = policy
    return r, runtime, clock


async def _pass(r: Reconciler) -> None:
    """One reconcile pass, then let the actions it launched finish."""
    r.mark_containers_dirty()
    await r.reconcile_once()
    for _ in range(50):
        await asyncio.sleep(0)


async def test_rare_crashes_restart_at_once_every_time() -> None:
    r, runtime, clock = _setup()
    await _pass(r)  # claim + start
    assert runtime.starts == 1
    for day in range(1, 8):  # a crash "once a day", after a long healthy run each time
        clock.now += 3600.0
        await _pass(r)  # healthy: nothing to do
        runtime.crash_all()
        await _pass(r)
        assert runtime.starts == 1 + day, f"crash {day} was not restarted at once"
    # ... and a crash right after that restart is retried within the base delay (plus jitter),
    # not after a delay grown by seven earlier, unrelated crashes
    clock.now += 0.1
    runtime.crash_all()
    await _pass(r)
    clock.now += 1.0
    await _pass(r)
    assert runtime.starts == 9, "a crash after many healthy days waited for a grown backoff"


async def test_crash_loop_backs_off() -> None:
    r, runtime, clock = _setup()
    await _pass(r)
    starts = []
    for _ in range(12):  # crash right after every start, 12 s of wall time in 0.25 s steps
        runtime.crash_all()
        for _ in range(4):
            clock.now += 0.25
            await _pass(r)
        starts.append(runtime.starts)
    assert runtime.starts < 10, f"crash loop restarted {runtime.starts} times in 12 s"
    assert starts[-1] > starts[0], "it does retry"


async def test_a_crash_loop_noticed_late_still_backs_off() -> None:
    """A busy agent notices each exit 2 s after the start, longer than the policy's healthy
    window (1.5 s), but the engine says each run lasted 50 ms: the crashes count up and the
    restarts wait longer each time.  Judged by the time since our start, every exit passed for a
    healthy run (count 1, restart at once): seen on real containers in a loaded CI run."""
    policy = RetryPolicy(crash=RestartPolicy(backoff=Backoff(base=0.3, max_delay=20.0), stable_after=1.5, jitter=0.2))
    r, runtime, clock = _setup(policy=policy)
    await _pass(r)
    counts = []
    for _ in range(4):
        clock.now += 2.0  # the exit is noticed this late
        runtime.crash_all(ran_for=0.05)
        await _pass(r)
        counts.append(r.retries[(WEB, 1)].crashes)
        clock.now += 20.0  # past any backoff: started again
        await _pass(r)
    assert counts == [1, 2, 3, 4]
