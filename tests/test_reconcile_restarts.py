"""The reconciler's crash-restart bookkeeping, driven with fakes and a fake clock (pure logic, fast).

A container that crashes once in a long while restarts at once every time: its failure count
resets after a healthy run, so it never drifts to the backoff cap.  A crash loop still backs off.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from daprdockr.core.containers import ContainerInfo
from daprdockr.core.jsondata import dumps
from daprdockr.core.keys import KeySchema
from daprdockr.core.mirror import StateMirror, WatchEvent
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from daprdockr.core.removal import KeyEvent
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

    async def remove(self, container_id: str, *, grace: float, signal: str | None = None) -> None:
        self.containers.pop(container_id, None)

    def crash_all(self) -> None:
        self.containers = {k: replace(c, running=False) for k, c in self.containers.items()}


def _setup() -> tuple[Reconciler, FakeRuntime, Clock]:
    schema = KeySchema("/t")
    mirror = StateMirror(schema=schema)
    mirror.reset([RawKV(key=schema.service(WEB), value=dumps(SPEC.to_dict()), mod_revision=2)], revision=2)
    runtime, clock = FakeRuntime(), Clock()
    r = Reconciler(node_id="n1", address="127.0.0.11", store=FakeStore(mirror), runtime=runtime, mirror=mirror,
                   clock=clock, on_written=mirror.apply)
    r.lease = LEASE
    r.claiming = True
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
