"""Table tests for spec versioning without I/O: the records of a new version, the version a
rollback goes to, what a failed rollout becomes, resuming a paused one."""

from __future__ import annotations

import json

import pytest

from daprdockr.core.keys import KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.rollout import HISTORY_KEEP, HistoryEntry, RolloutRecord
from daprdockr.core.versioning import (
    REASON_LIMIT,
    Pause,
    RollBack,
    failure_applies,
    next_version,
    on_failure,
    resumed,
    rollback_source,
    rollback_wanted,
    scaled,
    stored_versions,
    unchanged,
    version_writes,
)
from daprdockr.errors import ConflictError, DaprDockrError, NotFoundError, ValidationError

S = KeySchema("/p")
WEB = ServiceName(group="myapp", service="web")
NOW = 1000.0


def spec(version: str, *, instances: int = 2) -> ServiceSpec:
    return ServiceSpec.from_dict({"image": "busybox", "instances": instances, "env": {"V": version}}, name=WEB)


def entry(version: int, of: str = "", *, raw: dict[str, object] | None = None) -> HistoryEntry:
    return HistoryEntry(version=version, spec=raw if raw is not None else spec(of or str(version)).to_dict(), at=1.0)


@pytest.mark.parametrize(("keys", "versions"), [
    ([], []),
    ([S.history(WEB, 10), S.history(WEB, 9), S.history(WEB, 2)], [2, 9, 10]),
    ([S.history(WEB, 3), S.history(WEB) + "x", S.history(WEB) + "-1"], [3]),
])
def test_stored_versions_are_the_numeric_tails_in_order(keys: list[str], versions: list[int]) -> None:
    assert stored_versions(keys) == versions


@pytest.mark.parametrize(("current", "new", "rollout", "same"), [
    (None, spec("1"), None, False),
    (spec("1"), spec("1"), None, True),
    (spec("1"), spec("1", instances=3), None, False),
    (spec("1"), spec("1"), RolloutRecord(version=0, target="t"), False),  # a given record is always written
])
def test_unchanged(current: ServiceSpec | None, new: ServiceSpec, rollout: RolloutRecord | None, same: bool) -> None:
    assert unchanged(current, new, rollout=rollout) is same


@pytest.mark.parametrize(("current", "new", "versions", "expect"), [
    # the first version: one entry, no rollout (nothing is replaced)
    (None, spec("1"), [], (1, [(1, "set")], [], None)),
    # scaling: a new version, no rollout
    (spec("1"), spec("1", instances=5), [1], (2, [(2, "set")], [], None)),
    # the containers change: a rollout from the newest kept version
    (spec("1"), spec("2"), [1, 2], (3, [(3, "set")], [], (3, 2))),
    # a spec stored before history was kept is seeded as version 1
    (spec("old"), spec("new"), [], (2, [(1, "seeded"), (2, "set")], [], (2, 1))),
    # a deleted service written again goes on from its history, replacing nothing
    (None, spec("2"), [4, 5], (6, [(6, "set")], [], None)),
    # only the last HISTORY_KEEP versions stay
    (spec("1", instances=3), spec("1", instances=4), list(range(3, 13)), (13, [(13, "set")], [3], None)),
    (spec("1", instances=3), spec("1", instances=4), list(range(1, 13)), (13, [(13, "set")], [1, 2, 3], None)),
])
def test_next_version(current: ServiceSpec | None, new: ServiceSpec, versions: list[int],
                      expect: tuple[int, list[tuple[int, str]], list[int], tuple[int, int] | None]) -> None:
    version, history, dropped, rollout = expect
    got = next_version(new, current, versions, cause="set", rollout=None, now=NOW)
    assert got.version == version
    assert [(e.version, e.cause) for e in got.history] == history
    assert got.history[-1].spec == new.to_dict() and all(e.at == NOW for e in got.history)
    assert list(got.dropped) == dropped
    assert len([v for v in [*versions, version] if v not in got.dropped]) <= HISTORY_KEEP
    if rollout is None:
        assert got.rollout is None
    else:
        assert current is not None and got.rollout is not None
        assert (got.rollout.version, got.rollout.previous_version) == rollout
        assert (got.rollout.target, got.rollout.previous, got.rollout.state) == (
            new.runtime_hash, current.runtime_hash, "rolling")


def test_a_given_rollout_record_gets_the_new_version() -> None:
    given = RolloutRecord(version=0, target="t", state="rolled-back", reason="r")
    got = next_version(spec("1"), spec("2"), [1, 2], cause="automatic rollback to 1", rollout=given, now=NOW)
    assert got.rollout == RolloutRecord(version=3, target="t", state="rolled-back", reason="r")
    assert got.history[-1].cause == "automatic rollback to 1"


def test_version_writes_are_the_spec_its_entries_the_dropped_ones_and_the_rollout() -> None:
    new = next_version(spec("new"), spec("old"), list(range(1, 11)), cause="set", rollout=None, now=NOW)
    writes = version_writes(S, spec("new"), new)
    assert [(key, value is None) for key, value, _ in writes] == [
        (S.service(WEB), False), (S.history(WEB, 11), False), (S.history(WEB, 1), True), (S.rollout(WEB), False)]
    assert all(lease == 0 for _, _, lease in writes)
    assert json.loads(writes[0][1] or b"") == spec("new").to_dict()
    assert HistoryEntry.from_dict(json.loads(writes[1][1] or b"")) == new.history[0]
    assert RolloutRecord.from_dict(json.loads(writes[3][1] or b"")) == new.rollout


@pytest.mark.parametrize(("versions", "to", "source"), [
    ([1, 2, 3], None, 2),
    ([1, 2, 3], 1, 1),
    ([1, 2, 3], 3, 3),
    ([1, 2, 3], 4, "no version 4 (kept: 1, 2, 3)"),
    ([5], None, "no version before 5"),
    ([], None, "has no history"),
    ([], 1, "has no history"),
])
def test_rollback_source(versions: list[int], to: int | None, source: int | str) -> None:
    entries = [entry(v) for v in versions]
    if isinstance(source, str):
        with pytest.raises(NotFoundError, match=source.replace("(", r"\(").replace(")", r"\)")):
            rollback_source(WEB, entries, to=to)
    else:
        assert rollback_source(WEB, entries, to=to).version == source


ROLLING = RolloutRecord(version=3, target="new", previous_version=2, previous="old", state="rolling")


@pytest.mark.parametrize(("record", "target", "applies"), [
    (None, "new", False),
    (ROLLING, "new", True),
    (ROLLING, "other", False),  # a newer rollout meanwhile
    (RolloutRecord(version=3, target="new", state="paused"), "new", False),  # handled already
    (RolloutRecord(version=3, target="new", state="rolled-back"), "new", True),
])
def test_failure_applies(record: RolloutRecord | None, target: str, applies: bool) -> None:
    assert failure_applies(record, target=target) is applies


@pytest.mark.parametrize(("record", "rollback", "wanted"), [
    (ROLLING, True, 2),
    (ROLLING, False, 0),
    (RolloutRecord(version=1, target="new"), True, 0),  # no earlier version
    (RolloutRecord(version=3, target="new", previous_version=2, state="rolled-back"), True, 0),
])
def test_rollback_wanted(record: RolloutRecord, rollback: bool, wanted: int) -> None:
    assert rollback_wanted(record, rollback=rollback) == wanted


@pytest.mark.parametrize(("record", "rollback", "previous", "expect"), [
    (ROLLING, True, entry(2, "old"), ("rolled-back", "r")),
    (ROLLING, False, None, ("paused", "r")),
    (ROLLING, True, None, ("paused", "r; paused instead of rolled back: version 2 is not in the history")),
    (ROLLING, True, entry(2, raw={"image": ""}),
     ("paused", "r; paused instead of rolled back: version 2 is not in the history")),
    (RolloutRecord(version=1, target="new"), True, None,
     ("paused", "r; paused instead of rolled back: no earlier version is known")),
    # a rolled-back rollout failing again pauses where it is
    (RolloutRecord(version=4, target="new", previous_version=3, state="rolled-back"), True, None, ("paused", "r")),
])
def test_on_failure(record: RolloutRecord, rollback: bool, previous: HistoryEntry | None,
                    expect: tuple[str, str]) -> None:
    state, reason = expect
    got = on_failure(WEB, record, reason="r", rollback=rollback, previous=previous, now=NOW)
    assert (got.record.state, got.record.reason, got.record.at) == (state, reason, NOW)
    if isinstance(got, RollBack):
        assert previous is not None and got.source == previous.version and got.previous == spec("old")
        assert (got.record.target, got.record.previous_version, got.record.previous) == (
            spec("old").runtime_hash, record.version, record.target)
        assert got.spec(spec("new", instances=7)).instances == 7  # what rolled out only
    else:
        assert isinstance(got, Pause)
        assert got.record.version == record.version and got.record.target == record.target
        assert bool(got.problem) == (previous is not None)


def test_a_failure_reason_is_cut_to_its_limit() -> None:
    got = on_failure(WEB, ROLLING, reason="x" * (REASON_LIMIT + 50), rollback=False, previous=None, now=NOW)
    assert got.record.reason == "x" * REASON_LIMIT


@pytest.mark.parametrize(("record", "ok"), [
    (None, False),
    (ROLLING, False),
    (RolloutRecord(version=3, target="new", state="paused", reason="r"), True),
])
def test_resumed(record: RolloutRecord | None, ok: bool) -> None:
    if not ok:
        with pytest.raises(NotFoundError, match="no paused rollout"):
            resumed(WEB, record, now=NOW)
        return
    assert record is not None
    got = resumed(WEB, record, now=NOW)
    assert (got.state, got.reason, got.at, got.version, got.target) == ("rolling", "", NOW, 3, "new")


_SCALE_NAME = ServiceName(group="app", service="web")
_SCALE_BASE = ServiceSpec.from_dict({"image": "busybox", "instances": 2, "env": {"A": "1"}}, name=_SCALE_NAME)


@pytest.mark.parametrize(("current", "problem", "instances", "expected"), [
    (_SCALE_BASE, None, 5, 5),
    (_SCALE_BASE, None, 0, 0),
    (None, None, 3, NotFoundError),
    (None, "truncated JSON", 3, ConflictError),
    (_SCALE_BASE, None, -1, ValidationError),
])
def test_a_scale_changes_only_the_instances(
    current: ServiceSpec | None, problem: str | None, instances: int, expected: int | type[DaprDockrError]
) -> None:
    if isinstance(expected, int):
        spec = scaled(_SCALE_NAME, current, problem, instances=instances)
        assert spec.instances == expected
        assert {**spec.to_dict(), "instances": 2} == _SCALE_BASE.to_dict()
    else:
        with pytest.raises(expected):
            scaled(_SCALE_NAME, current, problem, instances=instances)
