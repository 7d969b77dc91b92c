"""Rollouts, spec history and drain markers: the records that coordinate the lifecycle in etcd.  Pure.

* :class:`RolloutRecord` (``rollouts/<g>/<s>``) — written with every ``svc set`` that changes what
  the containers are made of: the target runtime hash and version, the previous ones (for an
  automatic rollback), and the state: ``rolling``, ``paused`` (a replacement failed and the
  policy says pause), ``rolled-back`` (a replacement failed: the previous version is desired
  again).  No central process drives it: each agent replaces its own instances.
* :class:`Slot` (``slots/<g>/<s>/<i>``, ``i`` in 1..``update.parallel``) — a replacement in flight.
  An agent takes a free slot with a create-if-absent transaction on its lease before it replaces
  an instance and deletes it after (with a compare on the slot's create revision, so it never
  deletes a slot another agent took since); so at most ``parallel`` replacements run at once across
  the cluster, and a slot of an agent that died frees itself with its lease.  A replacement that
  failed marks its slot ``failed`` before it reports the failure: no new replacement towards that
  target starts while such a slot is held (the rollout is being rolled back or paused).
* :class:`HistoryEntry` (``history/<g>/<s>/<v>``) — version ``v`` of the spec; the last
  :data:`HISTORY_KEEP` are kept, for ``svc history`` and ``svc rollback``.
* ``drain/<node>`` — the node is draining: it claims nothing, and its instances are handed over.

An automatic rollback (:func:`rollback_spec`) brings back what rolled out, not the whole previous
spec: the fields that make the containers (image, cmd, env, ports and ``http_port``, labels,
container options) with the health check and stop signal/grace they were run and checked with;
the instance count, ``http_host`` and update policy stay as they are now (a scale or a route
change made with the failed update is not undone; scaling meanwhile is kept).  A service written
before history was kept gets its current spec seeded as a history entry (cause ``seeded``) with
the next change, so that change can be rolled back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from daprdockr.core.model import ServiceSpec
from daprdockr.errors import ValidationError

HISTORY_KEEP = 10
SEEDED = "seeded"  # history cause of a version written before history was kept
RolloutState = Literal["rolling", "paused", "rolled-back"]
ROLLOUT_STATES: tuple[RolloutState, ...] = ("rolling", "paused", "rolled-back")


def _int(data: Mapping[str, Any], key: str, *, minimum: int = 0) -> int:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError("must be a non-negative integer", field=key)
    return value


def _str(data: Mapping[str, Any], key: str, *, limit: int = 4096) -> str:
    value = data.get(key, "")
    if not isinstance(value, str) or len(value) > limit:
        raise ValidationError("must be a string", field=key)
    return value


def _num(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError("must be a number", field=key)
    return float(value)


def _mapping(data: object, *, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValidationError(f"{what} must be a JSON object")
    return data


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    version: int
    target: str  # runtime hash being rolled out
    previous_version: int = 0  # 0: none (a first version has nothing to go back to)
    previous: str = ""
    state: RolloutState = "rolling"
    reason: str = ""
    at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "target": self.target, "previous_version": self.previous_version,
                "previous": self.previous, "state": self.state, "reason": self.reason, "at": self.at}

    @classmethod
    def from_dict(cls, data: object) -> RolloutRecord:
        d = _mapping(data, what="rollout record")
        state = d.get("state", "rolling")
        if state not in ROLLOUT_STATES:
            raise ValidationError(f"{state!r} is not one of {ROLLOUT_STATES}", field="state")
        return cls(version=_int(d, "version"), target=_str(d, "target", limit=64),
                   previous_version=_int(d, "previous_version"), previous=_str(d, "previous", limit=64),
                   state=state, reason=_str(d, "reason"), at=_num(d, "at"))


@dataclass(frozen=True, slots=True)
class Slot:
    node: str
    instance: int
    since: float = 0.0
    target: str = ""  # the runtime hash the replacement starts ("" in slots written before it was kept)
    failed: str = ""  # why the replacement failed ("": it has not)
    create_revision: int = field(default=0, compare=False)  # from etcd, not part of the value

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node, "instance": self.instance, "since": self.since,
                               "target": self.target}
        if self.failed:
            out["failed"] = self.failed
        return out

    @classmethod
    def from_dict(cls, data: object) -> Slot:
        d = _mapping(data, what="slot")
        return cls(node=_str(d, "node", limit=63), instance=_int(d, "instance", minimum=1), since=_num(d, "since"),
                   target=_str(d, "target", limit=64), failed=_str(d, "failed"))


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    version: int
    spec: Mapping[str, Any]  # the spec as written (``ServiceSpec.to_dict``)
    at: float = 0.0
    cause: str = "set"  # set | scale | rollback to N | automatic rollback to N | seeded

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "spec": dict(self.spec), "at": self.at, "cause": self.cause}

    @classmethod
    def from_dict(cls, data: object) -> HistoryEntry:
        d = _mapping(data, what="history entry")
        spec = _mapping(d.get("spec"), what="history spec")
        return cls(version=_int(d, "version", minimum=1), spec=dict(spec), at=_num(d, "at"),
                   cause=_str(d, "cause", limit=32) or "set")


def rollback_spec(current: ServiceSpec | None, previous: ServiceSpec) -> ServiceSpec:
    """The spec an automatic rollback writes: ``previous``'s containers (everything in its runtime
    hash, its health check and stop signal/grace) with ``current``'s instance count, ``http_host``
    and update policy.  Falls back to keeping fewer of ``current``'s fields when the mix is not a
    valid spec (an ``http_host`` needs the ``http_port`` of the previous version)."""
    if current is None:
        return previous
    base = previous.to_dict()
    for keep_route, keep_update in ((True, True), (False, True), (False, False)):
        mixed = {**base, "instances": current.instances}
        if keep_route:
            mixed.pop("http_host", None)
            if current.http_host is not None:
                mixed["http_host"] = current.http_host
        if keep_update:
            mixed["update"] = current.update.to_dict()
        try:
            spec = ServiceSpec.from_dict(mixed, name=previous.name)
        except ValidationError:
            continue
        if spec.runtime_hash == previous.runtime_hash:
            return spec
    return previous
