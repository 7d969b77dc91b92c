"""The executor acts on what an action was planned from (its spec, record and revisions), never on
state it reads again: when the spec changed in etcd after the plan, a Refresh, Adopt or Repair
still writes the record's health under the planned spec's check, and a Release, Stop or Start
still stops the old container with the planned spec's stop signal (the key is planned afresh once
the action is done)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from daprdockr.core.containers import ContainerInfo
from daprdockr.core.health import PerContainerHealth
from daprdockr.core.model import ServiceSpec
from daprdockr.core.planning.actions import Action, Adopt, Refresh, Release, Repair, Start, Stop
from daprdockr.core.records import Health, InstanceRecord
from tests.test_reconcile import LEASE, SCHEMA, WEB, World

PLANNED, LATER = "SIGUSR1", "SIGINT"  # the planned spec's stop signal, and the one etcd holds by then


class BySpec(PerContainerHealth):
    """A check whose verdict tells which spec it was asked under."""

    def health_of(self, container: ContainerInfo, spec: ServiceSpec) -> Health:
        return "healthy" if spec.stop_signal == PLANNED else "unhealthy"

    def restart_due(self, container: ContainerInfo, spec: ServiceSpec) -> bool:
        return False

    async def probe(self, container: ContainerInfo, spec: ServiceSpec) -> bool:
        return True


Build = Callable[[InstanceRecord, ContainerInfo, ServiceSpec, World], Action]


def _repair(rec: InstanceRecord, c: ContainerInfo, spec: ServiceSpec, w: World) -> Action:
    w.etcd.external(SCHEMA.instance(WEB, 1), b"{nope", LEASE)  # our lease holds garbage for the key
    return Repair(key=(WEB, 1), bad=w.mirror.state().invalid_instances[(WEB, 1)], container=c, spec=spec)


WRITES: list[tuple[str, Build]] = [
    ("refresh", lambda rec, c, spec, w: Refresh(record=replace(rec, state="starting"), container=c, spec=spec)),
    ("adopt", lambda rec, c, spec, w: Adopt(container=c, spec=spec, record=replace(rec, lease=LEASE - 1))),
    ("repair", _repair),
]
STOPS: list[tuple[str, Build]] = [
    ("release", lambda rec, c, spec, w: Release(record=rec, container=c, reason="scaled down", spec=spec)),
    ("stop", lambda rec, c, spec, w: Stop(container=c, reason="held elsewhere", spec=spec)),
    ("start", lambda rec, c, spec, w: Start(record=rec, spec=spec, old=c, reason="unhealthy")),
]


async def _planned_then_changed(w: World) -> tuple[InstanceRecord, ContainerInfo, ServiceSpec, list[str | None]]:
    """Instance 1 runs under the PLANNED spec; then etcd's spec moves on to LATER (same containers)."""
    signals: list[str | None] = []
    remove = w.docker.remove

    async def removing(container_id: str, *, grace: float, signal: str | None = None) -> None:
        signals.append(signal)
        await remove(container_id, grace=grace, signal=signal)

    w.docker.remove = removing  # type: ignore[method-assign]
    w.r.health = BySpec()
    planned = w.spec(1, stop_signal=PLANNED)
    await w.settle()
    rec = w.mirror.state().instances[(WEB, 1)]
    assert rec.state == "running" and rec.health == "healthy"
    later = w.spec(1, stop_signal=LATER)
    assert later.runtime_hash == planned.runtime_hash  # (the stop signal replaces no container)
    return rec, w.docker.containers[rec.container_id], planned, signals


@pytest.mark.parametrize("build", [b for _, b in WRITES], ids=[n for n, _ in WRITES])
async def test_a_record_is_written_under_the_spec_the_action_was_planned_from(build: Build) -> None:
    w = World()
    rec, c, planned, _ = await _planned_then_changed(w)
    action = build(rec, c, planned, w)
    before = w.etcd.revision
    await w.r.executor.execute(action)
    written = w.mirror.state().instances[(WEB, 1)]
    assert written.mod_revision > before  # (rewritten by the action, not left as it was)
    assert (written.container_id, written.state, written.health) == (c.id, "running", "healthy")


@pytest.mark.parametrize("build", [b for _, b in STOPS], ids=[n for n, _ in STOPS])
async def test_a_container_is_stopped_with_the_spec_the_action_was_planned_from(build: Build) -> None:
    w = World()
    rec, c, planned, signals = await _planned_then_changed(w)
    await w.r.executor.execute(build(rec, c, planned, w))
    assert c.id not in w.docker.containers
    assert signals == [PLANNED]
