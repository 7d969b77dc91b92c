"""The health monitor's per-pass answer (:meth:`HealthMonitor.observed`, kept between passes)
equals the answer asked of every container afresh (:class:`PerContainerHealth`), after random
sequences of check results, spec versions, listings, pauses and time; and an unchanged pass is
answered without asking any container."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from daprdockr.core.containers import ContainerInfo, LocalContainers
from daprdockr.core.health import PerContainerHealth
from daprdockr.core.lifecycle import HealthCheck
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import Health
from daprdockr.core.rollout import HistoryEntry
from daprdockr.health import HealthMonitor

SERVICES = [ServiceName(group="ho", service=f"s{i}") for i in range(3)]


class NoExec:
    async def exec_ok(self, container_id: str, cmd: Sequence[str], *, within: float) -> bool:
        return False

    async def docker_health(self, container_id: str) -> str:
        return ""


def spec(name: ServiceName, version: int) -> ServiceSpec:
    """Even versions have a tcp check (restart after 2 s unhealthy), odd ones none."""
    health: dict[str, object] | None = None
    if version % 2 == 0:
        health = {"tcp": 8080, "interval": "1s", "retries": 1, "restart_unhealthy_after": "2s"}
    return ServiceSpec.from_dict({"image": "x", "http_port": 8080, "env": {"V": str(version)}, "health": health},
                                 name=name)


ops = st.lists(st.one_of(
    st.tuples(st.just("probe"), st.integers(0, 11), st.booleans()),
    st.tuples(st.just("spec"), st.integers(0, 2), st.integers(0, 3)),
    st.tuples(st.just("list"), st.integers(0, 11), st.booleans()),
    st.tuples(st.just("pause"), st.integers(0, 11), st.booleans()),
    st.tuples(st.just("tick"), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("old"), st.integers(0, 11), st.booleans()),  # a container of version 98 (no check) or 100
    st.tuples(st.just("hist"), st.integers(0, 2), st.booleans()),  # those versions appear in the history
), max_size=40)


@settings(max_examples=150, deadline=None)
@given(ops=ops)
def test_observed_equals_a_fresh_answer(ops: list[tuple[str, int, object]]) -> None:
    asyncio.run(_run(ops))


async def _run(ops: list[tuple[str, int, object]]) -> None:
    now = [100.0]
    versions = dict.fromkeys(SERVICES, 0)
    specs: Mapping[ServiceName, ServiceSpec] = {n: spec(n, 0) for n in SERVICES}
    containers = {i: ContainerInfo(id=f"c{i}", service=SERVICES[i % 3], number=i, node="n1",
                                   spec_hash=specs[SERVICES[i % 3]].runtime_hash, running=True, created=1.0)
                  for i in range(6)}
    answers: dict[str, bool] = {}
    history: dict[ServiceName, dict[int, HistoryEntry]] = {}

    async def network(c: ContainerInfo, check: HealthCheck) -> bool:
        return answers.get(c.id, True)

    mon = HealthMonitor(runtime=NoExec(), address="127.0.0.1", containers=lambda: list(containers.values()),
                        specs=lambda: specs, history=lambda: history, network=network, clock=lambda: now[0],
                        wall=lambda: 1.0)
    local = LocalContainers(containers.values())
    for op, n, arg in ops:
        if op == "probe" and n in containers:
            c = containers[n]
            answers[c.id] = bool(arg)
            s = specs[c.service]
            await mon.probe(c, s)
        elif op == "spec":
            name = SERVICES[n]
            versions[name] += int(str(arg)) + 1
            specs = {**specs, name: spec(name, versions[name])}
            mon.check_due_once()  # (learns the new version, as its tick does)
        elif op == "list":
            if arg and n not in containers:
                s = specs[SERVICES[n % 3]]
                containers[n] = ContainerInfo(id=f"c{n}.{len(ops)}", service=s.name, number=n, node="n1",
                                              spec_hash=s.runtime_hash, running=True, created=1.0)
            elif not arg:
                containers.pop(n, None)
            local = LocalContainers(containers.values())
        elif op == "pause" and n in containers:
            containers[n] = replace(containers[n], paused=bool(arg))
            local = LocalContainers(containers.values())
        elif op == "old":
            old = spec(SERVICES[n % 3], 100 if arg else 98)
            containers[n] = ContainerInfo(id=f"c{n}.old", service=old.name, number=n, node="n1",
                                          spec_hash=old.runtime_hash, running=True, created=1.0)
            local = LocalContainers(containers.values())
        elif op == "hist":
            name = SERVICES[n]
            old = spec(name, 100 if arg else 98)
            history = {**history, name: {**history.get(name, {}), old_version(arg): HistoryEntry(
                version=old_version(arg), spec=old.to_dict())}}
        elif op == "tick":
            now[0] += n
            if arg:
                mon.check_due_once()
        kept = mon.observed(local, specs)
        fresh = PerContainerHealth.observed(mon, local, specs)
        assert (dict(kept[0]), kept[1]) == (dict(fresh[0]), fresh[1])


def old_version(arg: object) -> int:
    return 100 if arg else 98


class Counting(HealthMonitor):
    def __init__(self) -> None:
        history: Mapping[ServiceName, Mapping[int, HistoryEntry]] = {}  # (the mirror's, kept while unchanged)
        super().__init__(runtime=NoExec(), address="127.0.0.1", containers=list, specs=dict,
                         history=lambda: history)
        self.asked = 0

    def health_of(self, container: ContainerInfo, spec: ServiceSpec) -> Health | None:
        self.asked += 1
        return super().health_of(container, spec)


def test_an_unchanged_pass_asks_no_container_and_a_spec_change_asks_its_service_only() -> None:
    mon = Counting()
    specs = {n: spec(n, 1) for n in SERVICES}
    local = LocalContainers(ContainerInfo(id=f"c{i}", service=SERVICES[i % 3], number=i, node="n1",
                                          spec_hash=specs[SERVICES[i % 3]].runtime_hash, running=True)
                            for i in range(30))
    first = mon.observed(local, specs)
    assert mon.asked == 30 and dict(first[0]) == {f"c{i}": "" for i in range(30)}
    assert mon.observed(local, specs) == first and mon.asked == 30
    changed = {**specs, SERVICES[1]: spec(SERVICES[1], 3)}
    mon.observed(local, changed)
    assert mon.asked == 40  # the ten containers of the changed service
