"""The dashboard's cluster events, derived from one state to the next.  Pure: no I/O.

Each function compares the old and the new part of one thing (an instance record, a service's
spec and rollout, a node) and returns what happened to it as :class:`Happened` items: the kind,
one human line and the error.  :class:`~daprdockr.core.dashboard.DashboardModel` numbers and
stamps them (``seq``, ``at``, ``revision``).  Kinds are the contract's: ``claimed``, ``started``,
``failed``, ``stopped``, ``moved`` (failover: the number's node changed), ``scaled``, ``updated``,
``created``, ``deleted``, ``rollback``, ``paused``, ``drain``, ``undrain``, ``node-joined``,
``node-left``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import HOLLOW_RUNTIME, InstanceRecord, NodeRecord
from daprdockr.core.rollout import RolloutRecord

TEXT_LIMIT = 300  # an event's text is one line of at most this many characters


@dataclass(frozen=True, slots=True)
class Happened:
    kind: str
    text: str
    service: str = ""
    instance: int = 0
    node: str = ""
    error: str = ""

    def to_dict(self, *, seq: int, at: float, revision: int) -> dict[str, Any]:
        return {"seq": seq, "at": at, "revision": revision, "kind": self.kind, "service": self.service,
                "instance": self.instance, "node": self.node, "text": one_line(self.text), "error": self.error}


def one_line(text: str) -> str:
    """``text`` on one line (newlines and tabs as spaces), cut to :data:`TEXT_LIMIT` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= TEXT_LIMIT else flat[:TEXT_LIMIT - 1] + "…"


def instance_events(old: InstanceRecord | None, new: InstanceRecord | None, *, was_on: str = "") -> list[Happened]:
    """What happened to one instance number: ``old`` and ``new`` records (None: no key).
    ``was_on``: the node that held the number before it was gone (a failover seen in two steps:
    the key expired with its node's lease, then another node claimed it)."""
    if old is None and new is None:
        return []
    rec = new if new is not None else old
    assert rec is not None
    name, number = str(rec.service), rec.number
    who = f"{name} #{number}"

    def ev(kind: str, text: str, error: str = "") -> Happened:
        return Happened(kind=kind, text=text, service=name, instance=number, node=rec.node, error=error)

    if new is None:
        return [ev("stopped", f"{who} stopped on {rec.node}")]
    before = old.node if old is not None else was_on
    out = []
    if before and before != new.node:
        out.append(ev("moved", f"{who} moved from {before} to {new.node}"))
    elif old is None:
        out.append(ev("claimed", f"{who} claimed by {new.node}"))
    if old is None or old.state != new.state or (new.state == "failed" and old.error != new.error):
        if new.state == "running":
            out.append(ev("started", f"{who} running on {new.node}"))
        elif new.state == "failed":
            out.append(ev("failed", f"{who} failed on {new.node}: {new.error or 'no reason given'}", new.error))
        elif new.state == "paused":
            out.append(ev("paused", f"{who} paused on {new.node}"))
    return out


def service_events(
    name: ServiceName, *, old: ServiceSpec | None, new: ServiceSpec | None, old_invalid: str, new_invalid: str,
    old_rollout: RolloutRecord | None, new_rollout: RolloutRecord | None, version: int,
) -> list[Happened]:
    """What happened to a service: created, deleted, scaled, updated (``version``: its newest
    history version), its spec turned invalid, its rollout rolled back or paused."""
    svc = str(name)
    out: list[Happened] = []
    if old is None and new is not None:
        out.append(Happened(kind="created", text=f"{svc} created: {new.image}, {new.instances} instance(s)",
                            service=svc))
    elif old is not None and new is None and not new_invalid:
        out.append(Happened(kind="deleted", text=f"{svc} deleted", service=svc))
    elif old is not None and new is not None and old is not new and old != new:
        if old.instances != new.instances:
            out.append(Happened(kind="scaled", text=f"{svc} scaled from {old.instances} to {new.instances}",
                                service=svc))
        if dataclasses.replace(old, instances=new.instances) != new:
            out.append(Happened(kind="updated", text=f"{svc} updated to version {version}: {new.image}",
                                service=svc))
    if new_invalid and new_invalid != old_invalid:
        out.append(Happened(kind="updated", text=f"{svc}: the stored spec is invalid ({new_invalid})", service=svc,
                            error=new_invalid))
    if new_rollout is not None and new_rollout.state != (old_rollout.state if old_rollout is not None else ""):
        if new_rollout.state == "rolled-back":
            out.append(Happened(kind="rollback", text=f"{svc} rolled back to version {new_rollout.previous_version}"
                                f" after version {new_rollout.version} failed: {new_rollout.reason}",
                                service=svc, error=new_rollout.reason))
        elif new_rollout.state == "paused":
            out.append(Happened(kind="paused", text=f"{svc} rollout of version {new_rollout.version} paused: "
                                f"{new_rollout.reason}", service=svc, error=new_rollout.reason))
    return out


def node_events(
    node_id: str, *, old: NodeRecord | None, new: NodeRecord | None, was_draining: bool, draining: bool,
) -> list[Happened]:
    """What happened to a node: joined (or rejoined: a new start), left, drain marked or lifted."""
    out: list[Happened] = []
    if new is not None and (old is None or old.started_at != new.started_at):
        hollow = " (hollow)" if new.runtime == HOLLOW_RUNTIME else ""
        out.append(Happened(kind="node-joined", text=f"node {node_id} joined at {new.address}{hollow}", node=node_id))
    elif new is None and old is not None:
        out.append(Happened(kind="node-left", text=f"node {node_id} left (its lease ended)", node=node_id))
    if draining and not was_draining:
        out.append(Happened(kind="drain", text=f"node {node_id} draining", node=node_id))
    elif was_draining and not draining:
        out.append(Happened(kind="undrain", text=f"node {node_id} drain lifted", node=node_id))
    return out
