"""Health of one container, from its check results: a pure state machine.

A container with a check starts ``starting``.  A passing check makes it ``healthy`` at once; a
failing one counts, and ``retries`` failures in a row make it ``unhealthy`` — except during the
``start_period`` after the container started, when failures do not count (it stays ``starting``).
:func:`restart_due` says when a container has been unhealthy for ``restart_unhealthy_after``.
:class:`PerContainerHealth` turns a source's per-container answers into what a planning pass
reads.  Nothing here runs a check or reads the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from daprdockr.core.containers import ContainerInfo, LocalContainers
from daprdockr.core.lifecycle import HealthCheck
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import Health


@dataclass(frozen=True, slots=True)
class HealthState:
    started_at: float
    status: Health = "starting"
    failures: int = 0  # consecutive
    since: float = 0.0  # when ``status`` last changed
    checked_at: float = float("-inf")


def observe(state: HealthState, *, ok: bool, now: float, check: HealthCheck) -> HealthState:
    """The state after one check result."""
    if ok:
        status: Health = "healthy"
        failures = 0
    else:
        failures = state.failures + 1
        in_start_period = now - state.started_at < check.start_period
        status = "unhealthy" if failures >= check.retries and not in_start_period else state.status
        if in_start_period:
            failures = 0
    since = state.since if status == state.status else now
    return replace(state, status=status, failures=failures, since=since, checked_at=now)


def due(state: HealthState, *, now: float, check: HealthCheck) -> bool:
    return now - state.checked_at >= check.interval


def restart_due(state: HealthState, *, now: float, check: HealthCheck) -> bool:
    return (state.status == "unhealthy" and check.restart_unhealthy_after > 0
            and now - state.since >= check.restart_unhealthy_after)


class PerContainerHealth:
    """A health source that answers container by container; :meth:`observed` asks each serving
    container (the agent's health monitor keeps its answers between passes instead)."""

    def health_of(self, container: ContainerInfo, spec: ServiceSpec) -> Health | None:
        """"" without a check, the container's status, or None while unknown (keep the record's)."""
        raise NotImplementedError

    def restart_due(self, container: ContainerInfo, spec: ServiceSpec) -> bool:
        raise NotImplementedError

    def observed(
        self, containers: LocalContainers, specs: Mapping[ServiceName, ServiceSpec],
    ) -> tuple[Mapping[str, Health], frozenset[str]]:
        """What each serving container's record should say about its health (unknown ones left
        out: the record keeps what it says), and the containers due for an unhealthy restart."""
        health: dict[str, Health] = {}
        restart: set[str] = set()
        for c in containers:
            spec = specs.get(c.service)
            if spec is None or not c.serving:
                continue
            if (status := self.health_of(c, spec)) is not None:
                health[c.id] = status
            if self.restart_due(c, spec):
                restart.add(c.id)
        return health, frozenset(restart)
