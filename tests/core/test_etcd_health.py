"""etcd housekeeping, the pure parts: the compaction schedule, the options, what an alarm means,
and the compaction lock key (a key of the schema, planned from by no one)."""

from __future__ import annotations

import pytest

from daprdockr.core.etcd_health import (
    DEFAULT_QUOTA_BYTES,
    EtcdHealth,
    Mark,
    alarm_names,
    compaction_step,
    compactor_of,
    parse_bytes,
    parse_interval,
)
from daprdockr.core.keys import KeySchema
from daprdockr.core.records import NodeRecord
from daprdockr.errors import ValidationError

S = KeySchema("/dd")


@pytest.mark.parametrize(("mark", "revision", "now", "expected"), [
    (None, 100, 0.0, (0, Mark(100, 0.0))),  # first tick of a new holder: only record
    (Mark(100, 0.0), 150, 299.0, (0, Mark(100, 0.0))),  # not an interval yet: keep the mark
    (Mark(100, 0.0), 150, 300.0, (100, Mark(150, 300.0))),  # an interval on: compact to the mark
    (Mark(100, 0.0), 100, 301.0, (0, Mark(100, 301.0))),  # nothing written since: nothing to compact
    (Mark(100, 0.0), 90, 301.0, (0, Mark(90, 301.0))),  # the store went back (restored): start again
])
def test_the_holder_compacts_to_the_revision_it_saw_one_interval_earlier(
        mark: Mark | None, revision: int, now: float, expected: tuple[int, Mark]) -> None:
    assert compaction_step(mark, revision=revision, now=now, interval=300.0) == expected


def test_a_run_of_ticks_keeps_one_interval_of_history() -> None:
    mark, compacted = None, []
    for tick in range(5):  # a tick every interval, 10 writes between ticks
        target, mark = compaction_step(mark, revision=100 + 10 * tick, now=300.0 * tick, interval=300.0)
        compacted.append(target)
    assert compacted == [0, 100, 110, 120, 130]


@pytest.mark.parametrize(("text", "seconds"), [
    ("300", 300.0), ("300s", 300.0), ("5m", 300.0), ("1h", 3600.0), ("0.5", 0.5), ("0", 0.0), ("off", 0.0),
    ("OFF", 0.0),
])
def test_compact_interval(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1", "nan", "inf", "5x"])
def test_bad_compact_interval_names_the_option(text: str) -> None:
    with pytest.raises(ValidationError, match="--compact-interval"):
        parse_interval(text)


@pytest.mark.parametrize(("text", "size"), [
    ("2147483648", DEFAULT_QUOTA_BYTES), ("2GiB", DEFAULT_QUOTA_BYTES), ("16MiB", 16 * 1024 ** 2), ("8m", 8 << 20),
])
def test_quota_bytes(text: str, size: int) -> None:
    assert parse_bytes(text) == size


@pytest.mark.parametrize("text", ["", "0", "-5", "lots", "2TB"])
def test_bad_quota_names_the_option(text: str) -> None:
    with pytest.raises(ValidationError, match="--etcd-quota-bytes"):
        parse_bytes(text)


@pytest.mark.parametrize(("alarms", "ok", "words"), [
    ((), True, "of a 16.0 MiB quota"),
    (("NOSPACE",), False, "NOSPACE alarm"),
    (("CORRUPT",), False, "CORRUPT alarm"),
    (("CORRUPT", "NOSPACE"), False, "CORRUPT alarm"),
])
def test_an_alarm_is_a_problem_that_says_what_to_do(alarms: tuple[str, ...], ok: bool, words: str) -> None:
    health = EtcdHealth(db_size=16 << 20, db_size_in_use=1 << 20, quota=16 << 20, alarms=alarms, polled=True)
    shown = health.to_dict()
    assert shown["ok"] is ok and words in shown["detail"] and shown["alarms"] == list(alarms)
    if not ok:
        assert "etcdctl alarm disarm" in health.problem
    if "NOSPACE" in alarms and "CORRUPT" not in alarms:
        assert "etcdctl defrag" in health.problem and "database space exceeded" in health.problem


def test_alarm_names_are_distinct_and_none_is_left_out() -> None:
    assert alarm_names([(1, "NOSPACE"), (2, "NOSPACE"), (3, "NONE"), (1, "CORRUPT")]) == ("CORRUPT", "NOSPACE")


@pytest.mark.parametrize(("nodes", "expected"), [
    ({}, ""),
    ({"n2": (5,), "n1": (9,)}, "n2"),  # the node that joined first, whatever its id
    ({"n2": (5,), "n1": (5,)}, "n1"),  # (a tie: the id)
    ({"n3": (12,), "n2": (30,)}, "n3"),
    ({"n1": (5, False), "n2": (9,)}, "n2"),  # n1 runs with --compact-interval 0: the next one compacts
    ({"n1": (5, False)}, ""),
])
def test_the_node_that_joined_first_compacts(nodes: dict[str, tuple[int, ...]], expected: str) -> None:
    records = {n: NodeRecord(node_id=n, address="127.0.0.11", create_revision=v[0], compacts=bool(v[1:] == ()))
               for n, v in nodes.items()}
    assert compactor_of(records) == expected


def test_a_node_record_says_compacts_false_only_when_it_does_not() -> None:
    on, off = NodeRecord(node_id="n1", address="127.0.0.11"), NodeRecord(node_id="n1", address="127.0.0.11",
                                                                          compacts=False)
    assert "compacts" not in on.to_dict() and off.to_dict()["compacts"] is False  # (old agents read on's as before)
    assert NodeRecord.from_dict(off.to_dict(), node_id="n1").compacts is False


def test_compaction_needs_no_key_under_the_prefix() -> None:
    """No lock key: agents from before compaction would log it as malformed and count it."""
    assert not hasattr(S, "compactor") and S.parse("/dd/housekeeping/compactor") is None
