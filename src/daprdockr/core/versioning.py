"""Spec versioning decided without I/O: what a new version of a spec writes (the spec, its
history entry, the entries that fall out of the history, a rollout record), which kept version a
rollback goes to, and what a failed rollout becomes (rolled back or paused).  The records are
those of :mod:`daprdockr.core.rollout`; :mod:`daprdockr.adapters.versions_store` reads and writes
them in etcd."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from daprdockr.core.jsondata import dumps
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.rollout import HISTORY_KEEP, SEEDED, HistoryEntry, RolloutRecord, rollback_spec
from daprdockr.errors import ConflictError, NotFoundError, ValidationError

REASON_LIMIT = 1024  # characters of a failure's reason kept in the rollout record
Write = tuple[str, bytes | None, int]  # one write of a transaction: key, value (None: delete), lease


@dataclass(frozen=True, slots=True)
class NextVersion:
    """The records of one new version of a spec."""

    version: int
    history: tuple[HistoryEntry, ...]  # the new entry, after a seeded one for a spec kept without history
    dropped: tuple[int, ...]  # kept versions that fall out of the history
    rollout: RolloutRecord | None  # written when what the containers are made of changed (or given)


def stored_versions(keys: Iterable[str]) -> list[int]:
    """The version numbers of a service's history keys, in order (keys not ending in one are ignored)."""
    return sorted(int(tail) for key in keys if (tail := key.rsplit("/", 1)[1]).isdigit())


def unchanged(current: ServiceSpec | None, spec: ServiceSpec, *, rollout: RolloutRecord | None) -> bool:
    """Writing ``spec`` over ``current`` makes no new version (equal, field for field, and no rollout given)."""
    return current is not None and spec == current and spec.to_dict() == current.to_dict() and rollout is None


def next_version(
    spec: ServiceSpec, current: ServiceSpec | None, versions: Sequence[int], *, cause: str,
    rollout: RolloutRecord | None, now: float,
) -> NextVersion:
    """The version after the kept ``versions`` (oldest first) for ``spec``, replacing ``current``.

    A stored spec with no history (written before history was kept) is seeded as version 1, so
    the change can be rolled back; only the last :data:`HISTORY_KEEP` versions stay.  ``rollout``
    is the record to write (its version set to the new one); without one, a new ``rolling``
    record is made when the runtime hash changes."""
    history: list[HistoryEntry] = []
    kept = list(versions)
    if not kept and current is not None:
        kept = [1]
        history.append(HistoryEntry(version=1, spec=current.to_dict(), at=now, cause=SEEDED))
    version = (kept[-1] if kept else 0) + 1
    history.append(HistoryEntry(version=version, spec=spec.to_dict(), at=now, cause=cause))
    if rollout is None and current is not None and current.runtime_hash != spec.runtime_hash:
        rollout = RolloutRecord(version=version, target=spec.runtime_hash, previous_version=kept[-1] if kept else 0,
                                previous=current.runtime_hash, at=now)
    return NextVersion(version=version, history=tuple(history),
                       dropped=tuple(v for v in kept if v <= version - HISTORY_KEEP),
                       rollout=None if rollout is None else replace(rollout, version=version))


def version_writes(schema: KeySchema, spec: ServiceSpec, new: NextVersion) -> list[Write]:
    """The writes of ``new`` (one transaction): the spec, its history entries, the dropped ones, the rollout record."""
    name = spec.name
    writes: list[Write] = [(schema.service(name), dumps(spec.to_dict()), 0)]
    writes += [(schema.history(name, e.version), dumps(e.to_dict()), 0) for e in new.history]
    writes += [(schema.history(name, v), None, 0) for v in new.dropped]
    if new.rollout is not None:
        writes.append((schema.rollout(name), dumps(new.rollout.to_dict()), 0))
    return writes


def scaled(name: ServiceName, current: ServiceSpec | None, problem: str | None, *, instances: int) -> ServiceSpec:
    """The stored spec of ``name`` with ``instances`` instances (a scale changes nothing else):
    NotFoundError if there is none, ConflictError if the stored one is invalid (``problem``)."""
    if current is None:
        if problem is not None:
            raise ConflictError(f"the stored spec of {name} is invalid ({problem}): write a whole spec to replace it")
        raise NotFoundError(f"service {name} not found")
    return ServiceSpec.from_dict({**current.to_dict(), "instances": instances}, name=name)


def rollback_source(name: ServiceName, entries: Sequence[HistoryEntry], *, to: int | None) -> HistoryEntry:
    """The kept version (``entries`` oldest first) a rollback to ``to`` writes again (default: the
    one before the newest); NotFoundError if there is none."""
    if not entries:
        raise NotFoundError(f"{name} has no history")
    if to is None:
        if len(entries) < 2:
            raise NotFoundError(f"{name} has no version before {entries[-1].version}")
        return entries[-2]
    for entry in entries:
        if entry.version == to:
            return entry
    raise NotFoundError(f"{name} has no version {to} (kept: {', '.join(str(e.version) for e in entries)})")


def failure_applies(record: RolloutRecord | None, *, target: str) -> bool:
    """A failed replacement towards ``target`` still has a rollout to act on (not handled already)."""
    return record is not None and record.target == target and record.state != "paused"


def rollback_wanted(record: RolloutRecord, *, rollback: bool) -> int:
    """The kept version a failure of ``record`` rolls back to: 0 if it pauses instead (the policy
    says pause, the rollout is no longer rolling, or no earlier version is known)."""
    return record.previous_version if rollback and record.state == "rolling" else 0


@dataclass(frozen=True, slots=True)
class RollBack:
    """Write ``spec`` (the failed rollout's containers undone) as a new version with ``record``."""

    source: int  # the kept version rolled back to
    previous: ServiceSpec  # that version's spec
    record: RolloutRecord  # state ``rolled-back``

    def spec(self, current: ServiceSpec | None) -> ServiceSpec:
        """The spec to write over ``current`` (:func:`~daprdockr.core.rollout.rollback_spec`)."""
        return rollback_spec(current, self.previous)


@dataclass(frozen=True, slots=True)
class Pause:
    """Write ``record`` (state ``paused``) over the rollout record."""

    record: RolloutRecord
    problem: str = ""  # why the kept version to roll back to is not a valid spec ("": it is, or there is none)


def on_failure(
    name: ServiceName, record: RolloutRecord, *, reason: str, rollback: bool, previous: HistoryEntry | None,
    now: float,
) -> RollBack | Pause:
    """What a failed replacement of ``record``'s rollout becomes: a rollback to ``previous`` (the
    kept version :func:`rollback_wanted` names, None if it is not kept) or a pause.  A rollback
    with no valid version to go to pauses, and the reason says why."""
    reason = reason[:REASON_LIMIT]
    problem = ""
    if rollback and record.state == "rolling":
        if previous is not None:
            try:
                old = ServiceSpec.from_dict(previous.spec, name=name)
            except ValidationError as exc:
                problem = str(exc)
            else:
                return RollBack(source=previous.version, previous=old, record=RolloutRecord(
                    version=0, target=old.runtime_hash, previous_version=record.version, previous=record.target,
                    state="rolled-back", reason=reason, at=now))
        why = (f"version {record.previous_version} is not in the history" if record.previous_version
               else "no earlier version is known")
        reason = f"{reason}; paused instead of rolled back: {why}"
    return Pause(record=replace(record, state="paused", reason=reason, at=now), problem=problem)


def resumed(name: ServiceName, record: RolloutRecord | None, *, now: float) -> RolloutRecord:
    """``record`` rolling again; NotFoundError unless it is paused."""
    if record is None or record.state != "paused":
        raise NotFoundError(f"{name} has no paused rollout")
    return replace(record, state="rolling", reason="", at=now)
