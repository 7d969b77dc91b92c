"""The dashboard's model: rows of the services, nodes and instances, and the change from one state
to the next.  Pure: no I/O.

:class:`DashboardModel` holds the rows of one :class:`~daprdockr.core.state.ClusterState` (built
once, in full) and :meth:`~DashboardModel.advance` moves it to a newer state, returning the change
message the dashboard's stream sends (the rows upserted and removed, and the events it derived).
An advance redoes only what changed, as the routing table does: the services whose instance
records changed come from the instance index's change log
(:func:`~daprdockr.core.instance_index.changed_services`), specs, invalid specs, rollouts, history
and node records are compared by identity (the mirror shares what an event did not touch), and
the nodes redone are those whose record or drain marker changed and those that held or now hold
a changed instance.  Applying the change messages to a snapshot gives the fresh snapshot of the
last state (the property test in ``tests/core/test_dashboard.py``).

Rows are the contract's (``Svc``, ``Node``, ``Inst``); they reuse the operator views' helpers in
:mod:`~daprdockr.core.status`.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from daprdockr.core.dashboard_events import Happened, instance_events, node_events, service_events
from daprdockr.core.instance_index import changed_keys, changed_services
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord, NodeRecord
from daprdockr.core.state import ClusterState
from daprdockr.core.status import has_service_row, node_row, rollout_phase, service_names, service_row

Row = dict[str, Any]
MAX_EVENTS = 500  # the events a snapshot carries (the newest)


def svc_row(state: ClusterState, name: ServiceName) -> Row:
    """``Svc``: desired vs running (and healthy: served), status, newest version, rollout."""
    row = service_row(state, name)
    del row["deleted"]  # (``status`` says it)
    history = state.history.get(name)
    rollout = state.rollouts.get(name)
    row["healthy"] = sum(1 for r in state.index.of_service(name).values() if r.routable)
    row["version"] = max(history) if history else 0
    row["rollout"] = {"state": rollout_phase(state, name), "version": rollout.version if rollout else 0,
                      "reason": rollout.reason if rollout else ""}
    return row


def dash_node_row(state: ClusterState, node: NodeRecord) -> Row:
    """``Node``: a node record exists only while its lease lives, so its lease is ``alive``."""
    return {**node_row(state, node), "capacity": node.capacity, "lease": "alive", "started_at": node.started_at}


def inst_key(name: ServiceName | str, number: int) -> str:
    return f"{name}/{number}"


def inst_row(rec: InstanceRecord) -> Row:
    """``Inst``: where one instance runs and how it is."""
    return {"key": inst_key(rec.service, rec.number), "service": str(rec.service), "number": rec.number,
            "node": rec.node, "address": rec.address, "ports": dict(rec.ports), "state": rec.state,
            "health": rec.health, "error": rec.error, "since": rec.since}


def newest_version(state: ClusterState, name: ServiceName) -> int:
    history = state.history.get(name)
    return max(history) if history else 0


def service_detail(state: ClusterState, name: ServiceName) -> Row | None:
    """``GET /v1/services/<g>/<s>``: the spec as stored (the last good one of an invalid spec),
    why it is invalid, its kept versions (oldest first) and its rollout; None if nothing of it is known."""
    spec = state.services.get(name)
    history = state.history.get(name, {})
    rollout = state.rollouts.get(name)
    if spec is None and not history and rollout is None and not has_service_row(state, name):
        return None
    return {"service": str(name), "spec": spec.to_dict() if spec is not None else None,
            "invalid": state.invalid_services.get(name, ""),
            "history": [history[v].to_dict() for v in sorted(history)],
            "rollout": rollout.to_dict() if rollout is not None else None}


class _Change:
    """The rows upserted and removed by one advance (in the order they were redone: sorted)."""

    def __init__(self) -> None:
        self.up: dict[str, list[Row]] = {"services": [], "nodes": [], "instances": []}
        self.removed: dict[str, list[str]] = {"services": [], "nodes": [], "instances": []}

    def put(self, table: dict[str, Row], kind: str, key: str, row: Row | None) -> None:
        if row is None:
            if table.pop(key, None) is not None:
                self.removed[kind].append(key)
        elif table.get(key) != row:
            table[key] = row
            self.up[kind].append(row)

    def empty(self) -> bool:
        return not any(self.up.values()) and not any(self.removed.values())


class DashboardModel:
    """The dashboard's rows of one state, advanced state by state (see the module docstring)."""

    def __init__(self, state: ClusterState, *, node_id: str, max_events: int = MAX_EVENTS) -> None:
        self.node_id = node_id
        self.state = state
        self.services: dict[str, Row] = {str(n): svc_row(state, n) for n in service_names(state)}
        self.nodes: dict[str, Row] = {n.node_id: dash_node_row(state, n) for n in state.nodes.values()}
        self.instances: dict[str, Row] = {inst_key(*key): inst_row(rec) for key, rec in state.index.items()}
        self.events: deque[Row] = deque(maxlen=max_events)
        self.seq = 0
        # numbers whose key went while the service still wants them: service -> number -> the node
        # that held it (a claim elsewhere is then a move: a failover seen in two steps)
        self._gone: dict[ServiceName, dict[int, str]] = {}

    @property
    def revision(self) -> int:
        return self.state.revision

    def snapshot(self) -> Row:
        """The whole model (the contract's snapshot), lists sorted."""
        return {"revision": self.state.revision, "node": self.node_id,
                "services": [self.services[k] for k in sorted(self.services)],
                "nodes": [self.nodes[k] for k in sorted(self.nodes)],
                "instances": sorted(self.instances.values(), key=lambda r: (r["service"], r["number"])),
                "events": list(self.events)}

    def advance(self, state: ClusterState, *, now: float) -> Row | None:
        """Move to ``state``; the change message (only what changed, and the new events), or None
        when no row changed and nothing happened."""
        old = self.state
        if state is old:
            return None
        self.state = state
        change = _Change()
        happened: list[Happened] = []
        touched_nodes: set[str] = set()
        instance_names = changed_services(old.index, state.index)
        names = (instance_names | changed_keys(old.services, state.services)
                 | changed_keys(old.invalid_services, state.invalid_services)
                 | changed_keys(old.rollouts, state.rollouts) | changed_keys(old.history, state.history))
        node_ids = changed_keys(old.nodes, state.nodes) | (old.draining ^ state.draining)
        service_happened: list[Happened] = []
        instance_happened: list[Happened] = []
        for name in sorted(names, key=str):
            if name in instance_names:
                instance_happened += self._instances(old, state, name, change, touched_nodes)
            change.put(self.services, "services", str(name), svc_row(state, name)
                       if has_service_row(state, name) else None)
            service_happened += self._service(old, state, name)
        for node_id in sorted(node_ids | touched_nodes):
            rec = state.nodes.get(node_id)
            change.put(self.nodes, "nodes", node_id, dash_node_row(state, rec) if rec is not None else None)
            happened += node_events(node_id, old=old.nodes.get(node_id), new=rec,
                                    was_draining=node_id in old.draining, draining=node_id in state.draining)
        happened += service_happened + instance_happened
        events = []
        for h in happened:
            self.seq += 1
            events.append(h.to_dict(seq=self.seq, at=now, revision=state.revision))
        self.events.extend(events)
        if change.empty() and not events:
            return None
        return {"revision": state.revision, "services": change.up["services"],
                "services_removed": change.removed["services"], "nodes": change.up["nodes"],
                "nodes_removed": change.removed["nodes"], "instances": change.up["instances"],
                "instances_removed": change.removed["instances"], "events": events}

    def _instances(self, old: ClusterState, state: ClusterState, name: ServiceName, change: _Change,
                   touched_nodes: set[str]) -> list[Happened]:
        """Redo one service's instance rows; what happened to them."""
        before, after = old.index.of_service(name), state.index.of_service(name)
        if before is after:
            return []
        spec = state.services.get(name)
        gone = self._gone.get(name, {})
        out: list[Happened] = []
        for number in sorted(before.keys() | after.keys()):
            was, now = before.get(number), after.get(number)
            if was is now or was == now:
                continue
            touched_nodes.update(r.node for r in (was, now) if r is not None)
            change.put(self.instances, "instances", inst_key(name, number), inst_row(now) if now is not None else None)
            was_on = gone.pop(number, "") if was is None else ""
            if now is None and was is not None and spec is not None and number <= spec.instances:
                gone = self._gone.setdefault(name, gone)
                gone[number] = was.node
            out += instance_events(was, now, was_on=was_on)
        if not gone:
            self._gone.pop(name, None)
        return out

    def _service(self, old: ClusterState, state: ClusterState, name: ServiceName) -> list[Happened]:
        spec = state.services.get(name)
        gone = self._gone.get(name)
        if gone is not None:  # (numbers no longer wanted are forgotten)
            for number in [n for n in gone if spec is None or n > spec.instances]:
                del gone[number]
            if not gone:
                del self._gone[name]
        return service_events(
            name, old=old.services.get(name), new=spec, old_invalid=old.invalid_services.get(name, ""),
            new_invalid=state.invalid_services.get(name, ""), old_rollout=old.rollouts.get(name),
            new_rollout=state.rollouts.get(name), version=newest_version(state, name))
