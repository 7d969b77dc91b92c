"""Operator views of the cluster state: pure functions from ClusterState to rows.

Used by ``daprdockr status``, ``ps``, ``nodes``, ``svc ls``, ``watch`` and ``--wait``: each view
is a list of plain dicts (the ``--json`` output) that the CLI renders as a table.  No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daprdockr.core.model import InstanceRecord, ServiceSpec
from daprdockr.core.names import ServiceName
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
    records = sorted(state.instances.values(), key=lambda r: (str(r.service), r.number))
    return [
        {
            "service": str(r.service),
            "instance": r.number,
            "node": r.node,
            "address": r.address,
            "ports": dict(r.ports),
            "state": r.state,
            "since": r.since,
            "age": _age(r.since, now),
            "container_id": r.container_id[:12],
            "error": r.error,
        }
        for r in records
        if service is None or r.service == service
    ]


def service_rows(state: ClusterState) -> list[dict[str, Any]]:
    """Desired vs running for every service (and orphans: instances of deleted services).

    ``status`` is ``ok``, ``deleted`` (instances left of a deleted service) or ``invalid`` (the
    stored spec is malformed: the service is frozen as it is; ``invalid`` says why).
    """
    names = sorted(
        set(state.services) | set(state.invalid_services) | {r.service for r in state.instances.values()}, key=str)
    rows = []
    for name in names:
        spec = state.services.get(name)
        recs = state.instances_of(name)
        problem = state.invalid_services.get(name, "")
        rows.append(
            {
                "service": str(name),
                "image": spec.image if spec else "",
                "desired": spec.instances if spec else 0,
                "running": sum(1 for r in recs if r.state == "running"),
                "failed": sum(1 for r in recs if r.state == "failed"),
                "http_host": (spec.http_host or "") if spec else "",
                "deleted": spec is None and not problem,
                "status": "invalid" if problem else ("deleted" if spec is None else "ok"),
                "invalid": problem,
            }
        )
    return rows


def node_rows(state: ClusterState, *, now: float) -> list[dict[str, Any]]:
    counts: dict[str, int] = {}
    for r in state.instances.values():
        counts[r.node] = counts.get(r.node, 0) + 1
    return [
        {
            "node": n.node_id,
            "address": n.address,
            "instances": counts.get(n.node_id, 0),
            "capacity": n.capacity or "unlimited",
            "up": _age(n.started_at, now),
            "dns": n.dns,
            "http": n.http,
            "api": n.api,
        }
        for n in sorted(state.nodes.values(), key=lambda n: n.node_id)
    ]


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a service is from its desired state (for ``svc set --wait``)."""

    desired: int
    running: int
    failed: tuple[str, ...]  # "instance 2 on n1: image ... is not available"

    @property
    def done(self) -> bool:
        return self.running >= self.desired and not self.failed


def progress(state: ClusterState, spec: ServiceSpec) -> Progress:
    """Running instances of ``spec`` on its current runtime hash, and failures with reasons."""
    recs: list[InstanceRecord] = [r for r in state.instances_of(spec.name) if r.number <= spec.instances]
    running = sum(1 for r in recs if r.state == "running" and r.spec_hash == spec.runtime_hash)
    failed = tuple(
        f"instance {r.number} on {r.node}: {r.error or 'failed'}" for r in recs if r.state == "failed"
    )
    return Progress(desired=spec.instances, running=running, failed=failed)
