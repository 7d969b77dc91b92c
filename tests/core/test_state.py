"""Table tests for decoding the key space into typed cluster state (pure)."""

from __future__ import annotations

import json

import pytest

from daprdockr.core.keys import KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from daprdockr.core.rollout import RolloutRecord, Slot
from daprdockr.core.state import RawKV, assemble_state, decode_entry, decode_state

S = KeySchema("/p")
WEB = ServiceName(group="myapp", service="web")
SPEC = ServiceSpec(name=WEB, image="busybox", instances=2)


def kv(key: str, value: object, *, lease: int = 0, rev: int = 1) -> RawKV:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return RawKV(key=key, value=raw, lease=lease, create_revision=rev, mod_revision=rev)


RUNNING = {"node": "n1", "address": "127.0.0.11", "state": "running", "ports": {"8080/tcp": 31001}}


def test_every_kind_of_key_lands_in_its_place() -> None:
    state = decode_state(S, [
        kv(S.service(WEB), SPEC.to_dict()),
        kv(S.instance(WEB, 1), RUNNING, lease=7, rev=3),
        kv(S.node("n1"), {"address": "127.0.0.11"}, lease=7),
        kv(S.applied("n1"), {"revision": 9}, lease=7),
        kv(S.rollout(WEB), RolloutRecord(version=2, target="abc").to_dict()),
        kv(S.slot(WEB, 1), Slot(node="n1", instance=1).to_dict(), lease=7),
        kv(S.drain("n2"), {}),
    ], revision=12)
    assert state.revision == 12 and state.services == {WEB: SPEC}
    rec = state.instances[(WEB, 1)]
    assert (rec.node, rec.lease, rec.create_revision, rec.port_for(8080)) == ("n1", 7, 3, 31001)
    assert set(state.nodes) == {"n1"} and state.applied == {"n1": 9} and state.draining == {"n2"}
    assert state.rollouts[WEB].target == "abc" and state.slots[WEB] == {1: Slot(node="n1", instance=1)}
    assert not state.skipped and not state.frozen


@pytest.mark.parametrize(
    ("key", "value", "lease", "reason"),
    [
        (S.instance(WEB, 1), b"{not json", 7, "not JSON"),
        (S.instance(WEB, 1), RUNNING, 0, "bound to no lease"),
        (S.instance(WEB, 1), {**RUNNING, "state": "dancing"}, 7, "state"),
        (S.applied("n1"), {"revision": -1}, 7, "applied"),
        ("/p/unknown/thing", {}, 0, "does not match the schema"),
        (S.service(WEB), b"x" * 70_000, 0, "bytes, at most"),
    ],
)
def test_a_malformed_entry_is_its_reason_never_an_exception(key: str, value: object, lease: int, reason: str) -> None:
    got = decode_entry(S, kv(key, value, lease=lease))
    assert isinstance(got, str) and reason in got


def test_a_bad_instance_key_is_a_taken_number_with_what_a_repair_needs() -> None:
    state = decode_state(S, [kv(S.instance(WEB, 2), {**RUNNING, "node": "n3", "state": 5}, lease=0, rev=8)])
    bad = state.invalid_instances[(WEB, 2)]
    assert (bad.lease, bad.create_revision, bad.mod_revision, bad.node) == (0, 8, 8, "n3")
    assert (WEB, 2) not in state.instances and state.skipped[0][0] == S.instance(WEB, 2)


def test_a_bad_spec_keeps_the_last_good_one_or_freezes_the_service() -> None:
    bad = kv(S.service(WEB), {"image": "busybox", "instances": "2"})
    entries = [(bad, decode_entry(S, bad))]
    frozen = assemble_state(S, entries)
    assert WEB in frozen.invalid_services and WEB in frozen.frozen and WEB not in frozen.services
    kept = assemble_state(S, entries, last_good={S.service(WEB): SPEC})
    assert kept.services == {WEB: SPEC} and WEB in kept.invalid_services and not kept.frozen


def test_instances_of_lists_one_service_in_number_order() -> None:
    other = ServiceName(group="myapp", service="api")
    state = decode_state(S, [kv(S.instance(WEB, 2), RUNNING, lease=1), kv(S.instance(other, 1), RUNNING, lease=1),
                             kv(S.instance(WEB, 1), RUNNING, lease=1)])
    assert [r.number for r in state.instances_of(WEB)] == [1, 2]
    assert all(isinstance(r, InstanceRecord) for r in state.instances_of(other))
