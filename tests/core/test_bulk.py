"""The bulk-decode helpers: :func:`loads` is ``json.loads`` (same values, same errors), the
collector pause restores what it found, and a full index build equals one made record by record."""

from __future__ import annotations

import gc
import json
import random

import pytest

from daprdockr.core.bulk import gc_paused, loads
from daprdockr.core.instance_index import IndexBuilder, InstanceIndex
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord


def _outcome(fn: object, value: bytes) -> tuple[str, ...]:
    try:
        return ("ok", repr(fn(value)))  # type: ignore[operator]
    except Exception as exc:  # (the exception's kind and text are the outcome)
        return ("error", type(exc).__name__, str(exc))


@pytest.mark.parametrize("value", [
    b'{"node": "n1", "state": "running"}', b' {"a": 1}', b'{"a": 1} ', b'{"a": 1}\n', b"\xef\xbb\xbf{}",
    '{"a": "\u00e9"}'.encode("utf-16"), '{"a": 1}'.encode("utf-16-le"), '{"a": 1}'.encode("utf-32"),
    b"{\x00}\x00", b'"\xed\xa0\x80"', b"\xff", b"", b"not json", b'{"a": 1}x', b"[" * 100_000, b"1" * 5000,
    b'{"a": NaN}', b'{"a": "\x01"}', b'{"a": 1, "a": 2}', b"null", b"1",
])
def test_loads_is_json_loads(value: bytes) -> None:
    assert _outcome(loads, value) == _outcome(json.loads, value)


def test_loads_is_json_loads_on_random_bytes() -> None:
    rnd = random.Random(1)
    alphabet = b'{}[]",:0123456789.eE+-truefalsnul \\\x00\xc3\xa9\xff\xfe'
    for _ in range(20_000):
        value = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12)))
        assert _outcome(loads, value) == _outcome(json.loads, value), value


def test_gc_paused_restores_the_collector() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        kept = [[i] for i in range(1000)]
    assert gc.isenabled() and gc.get_freeze_count() == 0 and kept[-1] == [999]
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled(), "left off when it was off"
    finally:
        gc.enable()


def _rec(service: ServiceName, number: int, node: str, lease: int) -> InstanceRecord:
    return InstanceRecord(service=service, number=number, node=node, address="10.0.0.1", lease=lease)


def test_a_full_index_build_equals_one_record_at_a_time() -> None:
    names = [ServiceName(group="g", service=f"s{i}") for i in range(5)]
    recs = [_rec(names[i % 5], i, f"n{i % 3}", 100 + i % 4) for i in range(1, 60)]
    built = InstanceIndex.build({r.key_tuple: r for r in recs})
    one_by_one = IndexBuilder()
    for r in recs:
        one_by_one.put(r)
    want = one_by_one.snapshot()
    assert dict(built) == dict(want) and len(built) == len(want)
    assert built.by_service == want.by_service and built.by_node == want.by_node and built.by_lease == want.by_lease
    moved = _rec(names[1], 1, "n9", 7)  # the same key again (another node): the last one wins
    builder = IndexBuilder()
    builder.load([*recs, moved])
    index = builder.snapshot()
    assert index[(names[1], 1)] is moved and len(index) == len(recs)
    assert (names[1], 1) in index.of_node("n9") and (names[1], 1) not in index.of_node("n1")
    builder.load([_rec(names[0], 99, "n0", 1)])  # into a builder that holds records: one by one
    assert len(builder.snapshot()) == len(recs) + 1
