"""The dashboard's model: rows, the events derived from one state to the next (tables), and the
change messages (property: applied to a snapshot they give the fresh snapshot of the last state)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings

from daprdockr.core.dashboard import DashboardModel, service_detail
from daprdockr.core.dashboard_events import Happened, instance_events, node_events, one_line, service_events
from daprdockr.core.keys import KeySchema
from daprdockr.core.mirror import StateMirror, WatchEvent
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord, NodeRecord
from daprdockr.core.rollout import HistoryEntry, RolloutRecord
from daprdockr.core.state import ClusterState
from tests.core.test_incremental_state import EVENTS, SCHEMA, step

WEB = ServiceName(group="myapp", service="web")
SPEC = ServiceSpec(name=WEB, image="busybox", instances=3, http_host="web.example.com", http_port=80)
N1 = NodeRecord(node_id="n1", address="127.0.0.11", capacity=5, started_at=900.0, runtime="hollow")


def rec(n: int, state: str = "running", node: str = "n1", error: str = "", health: str = "") -> InstanceRecord:
    return InstanceRecord(service=WEB, number=n, node=node, address="127.0.0.11", state=state,  # type: ignore[arg-type]
                          ports=(("80/tcp", 20001),), since=1000.0, error=error, health=health,  # type: ignore[arg-type]
                          spec_hash=SPEC.runtime_hash)  # type: ignore[arg-type]


def kinds(happened: list[Happened]) -> list[str]:
    return [h.kind for h in happened]


@pytest.mark.parametrize(("old", "new", "was_on", "expect"), [
    (None, rec(1, "claimed"), "", ["claimed"]),
    (None, rec(1, "running"), "", ["claimed", "started"]),
    (rec(1, "claimed"), rec(1, "starting"), "", []),
    (rec(1, "starting"), rec(1, "running"), "", ["started"]),
    (rec(1, "running"), rec(1, "failed", error="image gone"), "", ["failed"]),
    (rec(1, "failed", error="a"), rec(1, "failed", error="b"), "", ["failed"]),
    (rec(1, "failed", error="a"), rec(1, "failed", error="a"), "", []),
    (rec(1, "running"), rec(1, "paused"), "", ["paused"]),
    (rec(1, "running"), None, "", ["stopped"]),
    (rec(1, "running", node="n1"), rec(1, "claimed", node="n2"), "", ["moved"]),
    (None, rec(1, "claimed", node="n2"), "n1", ["moved"]),  # the key expired with n1's lease, then n2 claimed
    (None, rec(1, "claimed", node="n1"), "n1", ["claimed"]),  # back on the same node: no move
    (rec(1, "running", health="starting"), rec(1, "running", health="healthy"), "", []),
    (None, None, "", []),
])
def test_instance_events(old: InstanceRecord | None, new: InstanceRecord | None, was_on: str,
                         expect: list[str]) -> None:
    got = instance_events(old, new, was_on=was_on)
    assert kinds(got) == expect
    for h in got:
        assert (h.service, h.instance) == ("web.myapp", 1)
        if h.kind == "failed":
            assert h.error == new.error and new.error in h.text  # type: ignore[union-attr]


ROLLED_BACK = RolloutRecord(version=3, target="t", previous_version=2, previous="p", state="rolled-back",
                            reason="instance 1 failed")


@pytest.mark.parametrize(("old", "new", "old_invalid", "new_invalid", "old_rollout", "new_rollout", "expect"), [
    (None, SPEC, "", "", None, None, ["created"]),
    (SPEC, None, "", "", None, None, ["deleted"]),
    (SPEC, None, "", "bad json", None, None, ["updated"]),  # invalid, no good version known: not deleted
    (SPEC, SPEC, "", "bad json", None, None, ["updated"]),  # invalid, the last good spec kept
    (SPEC, SPEC, "bad json", "bad json", None, None, []),
    (SPEC, replace(SPEC, instances=5), "", "", None, None, ["scaled"]),
    (SPEC, replace(SPEC, image="busybox:2"), "", "", None, None, ["updated"]),
    (SPEC, replace(SPEC, image="busybox:2", instances=1), "", "", None, None, ["scaled", "updated"]),
    (SPEC, SPEC, "", "", replace(ROLLED_BACK, state="rolling"), ROLLED_BACK, ["rollback"]),
    (SPEC, SPEC, "", "", ROLLED_BACK, ROLLED_BACK, []),
    (SPEC, SPEC, "", "", None, replace(ROLLED_BACK, state="paused"), ["paused"]),
    (SPEC, SPEC, "", "", None, replace(ROLLED_BACK, state="rolling"), []),
])
def test_service_events(old: ServiceSpec | None, new: ServiceSpec | None, old_invalid: str, new_invalid: str,
                        old_rollout: RolloutRecord | None, new_rollout: RolloutRecord | None,
                        expect: list[str]) -> None:
    got = service_events(WEB, old=old, new=new, old_invalid=old_invalid, new_invalid=new_invalid,
                         old_rollout=old_rollout, new_rollout=new_rollout, version=4)
    assert kinds(got) == expect
    assert all(h.service == "web.myapp" and h.instance == 0 for h in got)


@pytest.mark.parametrize(("old", "new", "was", "now", "expect"), [
    (None, N1, False, False, ["node-joined"]),
    (N1, None, False, False, ["node-left"]),
    (N1, N1, False, True, ["drain"]),
    (N1, N1, True, False, ["undrain"]),
    (N1, replace(N1, started_at=950.0), False, False, ["node-joined"]),  # restarted
    (N1, replace(N1, capacity=9), False, False, []),
])
def test_node_events(old: NodeRecord | None, new: NodeRecord | None, was: bool, now: bool, expect: list[str]) -> None:
    got = node_events("n1", old=old, new=new, was_draining=was, draining=now)
    assert kinds(got) == expect
    assert all(h.node == "n1" and h.service == "" for h in got)


def test_event_text_is_one_bounded_line() -> None:
    (h,) = instance_events(rec(1), rec(1, "failed", error="line one\nline two\t" + "x" * 1000))
    ev = h.to_dict(seq=1, at=2.0, revision=3)
    assert "\n" not in ev["text"] and len(ev["text"]) <= 300 and ev["error"].startswith("line one\nline two")
    assert one_line("a\n b") == "a b"


def cluster(*recs: InstanceRecord, **kw: Any) -> ClusterState:
    return ClusterState(services={WEB: SPEC}, instances={r.key_tuple: r for r in recs}, nodes={"n1": N1}, **kw)


def test_the_rows_are_the_contracts() -> None:
    history = {WEB: {1: HistoryEntry(version=1, spec=SPEC.to_dict()), 2: HistoryEntry(version=2, spec=SPEC.to_dict())}}
    model = DashboardModel(cluster(rec(1), rec(2, "failed", error="boom"), rec(3, health="unhealthy"),
                                   rollouts={WEB: replace(ROLLED_BACK, state="rolling", version=2)}, history=history,
                                   draining=frozenset({"n1"}), revision=42), node_id="n1")
    snap = model.snapshot()
    assert snap["revision"] == 42 and snap["node"] == "n1" and snap["events"] == []
    assert snap["services"] == [{
        "service": "web.myapp", "image": "busybox", "desired": 3, "running": 2, "healthy": 1, "failed": 1,
        "paused": 0, "http_host": "web.example.com", "status": "ok", "invalid": "", "version": 2,
        "rollout": {"state": "rolling", "version": 2, "reason": "instance 1 failed"}}]
    assert snap["nodes"] == [{"node": "n1", "address": "127.0.0.11", "state": "draining", "capacity": 5,
                              "instances": 3, "runtime": "hollow", "dns": "", "http": "", "api": "", "lease": "alive",
                              "started_at": 900.0}]
    assert [i["key"] for i in snap["instances"]] == ["web.myapp/1", "web.myapp/2", "web.myapp/3"]
    assert snap["instances"][1] == {"key": "web.myapp/2", "service": "web.myapp", "number": 2, "node": "n1",
                                    "address": "127.0.0.11", "ports": {"80/tcp": 20001}, "state": "failed",
                                    "health": "", "error": "boom", "since": 1000.0}
    json.dumps(snap)  # (JSON as it is)


def test_a_complete_rollout_and_no_rollout() -> None:
    done = DashboardModel(cluster(rec(1), rec(2), rec(3), rollouts={WEB: replace(ROLLED_BACK, state="rolling")}),
                          node_id="n1")
    assert done.snapshot()["services"][0]["rollout"]["state"] == "complete"
    none = DashboardModel(cluster(rec(1)), node_id="n1").snapshot()["services"][0]
    assert none["rollout"] == {"state": "", "version": 0, "reason": ""} and none["version"] == 0


def test_an_advance_sends_only_what_changed_and_numbers_its_events() -> None:
    model = DashboardModel(cluster(rec(1), rec(2)), node_id="n1")
    assert model.advance(model.state, now=1.0) is None
    change = model.advance(cluster(rec(1), rec(2, "failed", error="oom"), revision=5), now=7.0)
    assert change is not None
    assert [i["key"] for i in change["instances"]] == ["web.myapp/2"] and change["instances_removed"] == []
    assert [s["failed"] for s in change["services"]] == [1] and change["nodes"] == []  # (held count unchanged)
    assert [(e["seq"], e["kind"], e["at"], e["revision"], e["error"]) for e in change["events"]] == \
        [(1, "failed", 7.0, 5, "oom")]
    change = model.advance(cluster(rec(1), revision=6), now=8.0)
    assert change is not None and change["instances_removed"] == ["web.myapp/2"]
    assert [n["instances"] for n in change["nodes"]] == [1]
    assert [e["seq"] for e in model.snapshot()["events"]] == [1, 2]


def test_a_failover_in_two_steps_is_a_move() -> None:
    n2 = replace(N1, node_id="n2", address="127.0.0.12")
    model = DashboardModel(ClusterState(services={WEB: SPEC}, instances={rec(1).key_tuple: rec(1)},
                                        nodes={"n1": N1, "n2": n2}), node_id="n2")
    gone = model.advance(ClusterState(services={WEB: SPEC}, nodes={"n2": n2}, revision=2), now=1.0)
    assert gone is not None and [e["kind"] for e in gone["events"]] == ["node-left", "stopped"]
    assert gone["nodes_removed"] == ["n1"]
    back = model.advance(ClusterState(services={WEB: SPEC}, instances={(WEB, 1): rec(1, "claimed", node="n2")},
                                      nodes={"n2": n2}, revision=3), now=2.0)
    assert back is not None and [e["kind"] for e in back["events"]] == ["moved"]


def test_service_detail() -> None:
    env = {"X": "<img src=x onerror=alert(1)>"}
    spec = replace(SPEC, env=tuple(env.items()))
    state = ClusterState(services={WEB: spec}, history={WEB: {1: HistoryEntry(version=1, spec=spec.to_dict())}},
                         invalid_services={WEB: "bad json"})
    detail = service_detail(state, WEB)
    assert detail is not None and detail["spec"]["env"] == env and detail["invalid"] == "bad json"
    assert [h["version"] for h in detail["history"]] == [1] and detail["rollout"] is None
    assert service_detail(state, ServiceName(group="myapp", service="nope")) is None


def apply_change(snapshot: dict[str, Any], change: dict[str, Any], *, max_events: int = 500) -> dict[str, Any]:
    """What a client does with a change message (the page's algorithm)."""
    out = dict(snapshot, revision=change["revision"])
    for table, key in (("services", "service"), ("nodes", "node"), ("instances", "key")):
        rows = {row[key]: row for row in snapshot[table]}
        for gone in change[f"{table}_removed"]:
            del rows[gone]
        rows.update((row[key], row) for row in change[table])
        out[table] = list(rows.values())
    out["events"] = (snapshot["events"] + change["events"])[-max_events:]
    return out


def canonical(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {**snapshot, "services": sorted(snapshot["services"], key=lambda r: r["service"]),
            "nodes": sorted(snapshot["nodes"], key=lambda r: r["node"]),
            "instances": sorted(snapshot["instances"], key=lambda r: (r["service"], r["number"]))}


@settings(max_examples=200, deadline=None)
@given(EVENTS)
def test_change_messages_applied_to_a_snapshot_give_the_fresh_snapshot(
    events: list[tuple[str, str, bytes, int]],
) -> None:
    """Random puts, deletes and resyncs (every key kind, good and garbage) through a real mirror;
    after each state the client's copy (a snapshot plus every change message) equals a fresh
    model of that state, and a message upserts only rows that differ from the client's."""
    mirror = StateMirror(schema=SCHEMA)
    mirror.reset([], revision=1)
    model = DashboardModel(mirror.state(), node_id="n1", max_events=20)
    client = model.snapshot()
    for revision, (kind, key, value, lease) in enumerate(events, start=2):
        step(mirror, kind, key, value, lease, revision=revision)
        if kind == "snapshot" or revision % 3:  # (bursts: several events, one advance)
            continue
        change = model.advance(mirror.state(), now=float(revision))
        if change is None:
            continue
        json.dumps(change)
        before = {t: {json.dumps(r, sort_keys=True) for r in client[t]} for t in ("services", "nodes", "instances")}
        for table in ("services", "nodes", "instances"):
            assert not any(json.dumps(r, sort_keys=True) in before[table] for r in change[table])
        client = apply_change(client, change, max_events=20)
        fresh = DashboardModel(mirror.state(), node_id="n1").snapshot()
        assert canonical(client) == {**fresh, "events": model.snapshot()["events"]}
        assert [e["seq"] for e in client["events"]] == sorted(e["seq"] for e in client["events"])


def test_an_unchanged_state_costs_no_message() -> None:
    mirror = StateMirror(schema=KeySchema("/dd"))
    mirror.reset([], revision=1)
    model = DashboardModel(mirror.state(), node_id="n1")
    mirror.apply(WatchEvent(kind="put", key=SCHEMA.applied("n1"), value=b'{"revision": 1}', revision=2))
    assert model.advance(mirror.state(), now=1.0) is None and model.revision == 2
