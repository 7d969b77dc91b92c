"""Operator views of the cluster state: pure functions from ClusterState to rows.

Used by ``daprdockr status``, ``ps``, ``nodes``, ``svc ls``, ``watch`` and ``--wait``: each view
is a list of plain dicts (the ``--json`` output) that the CLI renders as a table.  No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord, NodeRecord
from daprdockr.core.state import ClusterState


def _age(since: float, now: float) -> str:
    if since <= 0:
        return "-"
    secs = max(0, int(now - since))
    if secs < 120:
        return f"{secs}s"
    if secs < 7200:
        return f"{secs // 60}m"
    if secs < 172800:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"


def instance_rows(
    state: ClusterState, *, now: float, service: ServiceName | None = None
) -> list[dict[str, Any]]:
    """One row per instance (optionally of one service), sorted by service and number."""
    names = [service] if service is not None else sorted(state.index.by_service, key=str)
    records = [r for name in names for r in state.instances_of(name)]
    return [
        {
            "service": str(r.service),
            "instance": r.number,
            "node": r.node,
            "address": r.address,
            "ports": dict(r.ports),
            "state": r.state,
            "health": r.health or "-",
            "since": r.since,
            "age": _age(r.since, now),
            "container_id": r.container_id[:12],
            "error": r.error,
        }
        for r in records
    ]


def service_names(state: ClusterState) -> list[ServiceName]:
    """Every service a view shows (specs, invalid specs and orphans: instances of deleted services), sorted."""
    return sorted(set(state.services) | set(state.invalid_services) | set(state.index.by_service), key=str)


def has_service_row(state: ClusterState, name: ServiceName) -> bool:
    """Whether ``name`` is one of :func:`service_names` (a look, not a scan)."""
    return name in state.services or name in state.invalid_services or name in state.index.by_service


def service_row(state: ClusterState, name: ServiceName) -> dict[str, Any]:
    """Desired vs running for one service (see :func:`service_rows`); costs its own instances."""
    spec = state.services.get(name)
    recs = state.index.of_service(name).values()
    problem = state.invalid_services.get(name, "")
    return {
        "service": str(name),
        "image": spec.image if spec else "",
        "desired": spec.instances if spec else 0,
        "running": sum(1 for r in recs if r.state == "running"),
        "failed": sum(1 for r in recs if r.state == "failed"),
        "paused": sum(1 for r in recs if r.state == "paused"),
        "http_host": (spec.http_host or "") if spec else "",
        "deleted": spec is None and not problem,
        "status": "invalid" if problem else ("deleted" if spec is None else "ok"),
        "invalid": problem,
    }


def service_rows(state: ClusterState) -> list[dict[str, Any]]:
    """Desired vs running for every service (and orphans: instances of deleted services).

    ``status`` is ``ok``, ``deleted`` (instances left of a deleted service) or ``invalid`` (the
    stored spec is malformed: the service is frozen as it is; ``invalid`` says why).
    """
    return [service_row(state, name) for name in service_names(state)]


def node_state(state: ClusterState, node_id: str, held: int) -> str:
    """``ready``, ``draining`` (marked, still holds instances) or ``drained`` (marked, holds none)."""
    if node_id not in state.draining:
        return "ready"
    return "draining" if held else "drained"


def node_row(state: ClusterState, node: NodeRecord) -> dict[str, Any]:
    """What every view shows of one node (``nodes`` adds its age, the dashboard its lease)."""
    held = state.held_by(node.node_id)
    return {
        "node": node.node_id,
        "state": node_state(state, node.node_id, held),
        "address": node.address,
        "instances": held,
        "dns": node.dns,
        "http": node.http,
        "api": node.api,
        "runtime": node.runtime,  # "hollow": a test node, its containers in its agent's memory
    }


def node_rows(state: ClusterState, *, now: float) -> list[dict[str, Any]]:
    return [
        {**node_row(state, n), "capacity": n.capacity or "unlimited", "up": _age(n.started_at, now)}
        for n in sorted(state.nodes.values(), key=lambda n: n.node_id)
    ]


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a service is from the spec that was written (``svc set --wait``, ``svc status``)."""

    desired: int
    running: int  # instances running the spec's version
    failed: tuple[str, ...]  # "instance 2 on n1: image ... is not available"
    healthy: int = 0  # of those, served (running and, with a check, healthy)
    outdated: int = 0  # instances still running another version
    replacing: tuple[str, ...] = ()  # replacements in flight: "instance 3 on n2"
    rollout: str = ""  # the rollout record's state ("" without one)
    reason: str = ""  # why a rollout was paused or rolled back
    version: int = 0  # the version the rollout record is about
    halted: str = ""  # the written spec will not be reached: "rolled back: ..." / "paused: ..."

    @property
    def done(self) -> bool:
        return self.healthy >= self.desired and self.outdated == 0 and not self.failed and not self.halted

    def line(self, name: ServiceName) -> str:
        parts = [f"{name}: {self.healthy}/{self.desired} updated and healthy"]
        if self.outdated:
            parts.append(f"{self.outdated} on the old version")
        if self.replacing:
            parts.append(f"replacing {', '.join(self.replacing)}")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        if self.halted:
            parts.append(self.halted)
        return ", ".join(parts)


def progress(state: ClusterState, spec: ServiceSpec) -> Progress:
    """Where ``spec`` (as written) stands: instances on its runtime hash, replacements in flight,
    failures with reasons, and whether its rollout was rolled back or paused."""
    recs: list[InstanceRecord] = [r for r in state.instances_of(spec.name) if r.number <= spec.instances]
    target = spec.runtime_hash
    running = sum(1 for r in recs if r.state == "running" and r.spec_hash == target)
    healthy = sum(1 for r in recs if r.routable and r.spec_hash == target)
    outdated = sum(1 for r in recs if r.state == "running" and r.spec_hash != target)
    failed = tuple(
        f"instance {r.number} on {r.node}: {r.error or 'failed'}" for r in recs if r.state == "failed"
    )
    slots = state.slots.get(spec.name, {})
    replacing = tuple(f"instance {s.instance} on {s.node}" for _, s in sorted(slots.items()))
    rollout = state.rollouts.get(spec.name)
    halted = ""
    current = state.services.get(spec.name)
    if rollout is not None and rollout.state == "rolled-back" and rollout.previous == target:
        halted = f"rolled back: {rollout.reason}"
    elif rollout is not None and rollout.state == "paused" and rollout.target == target:
        halted = f"paused: {rollout.reason}"
    elif (current is not None and current.runtime_hash != target and rollout is not None
          and rollout.target == current.runtime_hash):  # (the record moved on with the spec: same transaction)
        halted = "replaced by a newer spec"
    return Progress(
        desired=spec.instances, running=running, failed=failed, healthy=healthy, outdated=outdated,
        replacing=replacing, rollout=rollout.state if rollout is not None else "",
        reason=rollout.reason if rollout is not None else "", version=rollout.version if rollout else 0,
        halted=halted,
    )


def rollout_phase(state: ClusterState, name: ServiceName, p: Progress | None = None) -> str:
    """The rollout's state as views show it: ``""`` (none), ``rolling``, ``complete`` (rolling,
    and every instance updated and healthy), ``paused`` or ``rolled-back``."""
    rollout = state.rollouts.get(name)
    if rollout is None:
        return ""
    spec = state.services.get(name)
    if rollout.state == "rolling" and spec is not None and (p or progress(state, spec)).done:
        return "complete"
    return rollout.state


def rollout_row(state: ClusterState, name: ServiceName) -> dict[str, Any]:
    """``svc status``: the service's rollout and where its instances stand."""
    spec = state.services.get(name)
    if spec is None:
        if name in state.invalid_services:
            return {"service": str(name), "status": "invalid", "reason": state.invalid_services[name]}
        return {"service": str(name), "status": "absent"}
    p = progress(state, spec)
    phase = rollout_phase(state, name, p) or "-"
    return {
        "service": str(name), "image": spec.image, "desired": p.desired, "updated": p.running,
        "healthy": p.healthy, "outdated": p.outdated, "failed": list(p.failed), "replacing": list(p.replacing),
        "rollout": phase, "version": p.version, "reason": p.reason,
        "update": spec.update.to_dict(), "health": spec.health.to_dict() if spec.health else None,
    }
