"""Health of one container, from its check results: a pure state machine.

A container with a check starts ``starting``.  A passing check makes it ``healthy`` at once; a
failing one counts, and ``retries`` failures in a row make it ``unhealthy`` — except during the
``start_period`` after the container started, when failures do not count (it stays ``starting``).
:func:`restart_due` says when a container has been unhealthy for ``restart_unhealthy_after``.
Nothing here runs a check or reads the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from daprdockr.core.lifecycle import HealthCheck
from daprdockr.core.model import Health


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
