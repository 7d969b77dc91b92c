"""Health check, update policy and stop grace in the spec; rollout records; rollout progress;
``svc set`` lifecycle flags.  Pure: tables in, values out."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from daprdockr.clikit.lifecycleflags import health_flags, merge_lifecycle, update_flags
from daprdockr.clikit.specfile import merge_flags
from daprdockr.core.containers import ContainerInfo
from daprdockr.core.jsondata import dumps
from daprdockr.core.keys import KeySchema
from daprdockr.core.lifecycle import HealthCheck, UpdatePolicy, parse_duration, parse_stop_signal
from daprdockr.core.local_view import local_view
from daprdockr.core.mirror import StateMirror, WatchEvent
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from daprdockr.core.rollout import HistoryEntry, RolloutRecord, Slot, rollback_spec
from daprdockr.core.state import ClusterState
from daprdockr.core.status import node_state, progress, rollout_row
from daprdockr.errors import ValidationError

WEB = ServiceName(group="g", service="web")
BASE: dict[str, Any] = {"image": "busybox", "instances": 2, "http_port": 8080}


def spec(**extra: Any) -> ServiceSpec:
    return ServiceSpec.from_dict({**BASE, **extra}, name=WEB)


@pytest.mark.parametrize(("value", "seconds"), [
    (5, 5.0), (2.5, 2.5), ("500ms", 0.5), ("10s", 10.0), ("2m", 120.0), ("1h", 3600.0), (" 3 ", 3.0),
])
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value, field="x") == seconds


@pytest.mark.parametrize("value", [True, "5 s", "-1", "1d", "", None, [1], "1e3", 10**9])
def test_bad_durations_name_the_field(value: object) -> None:
    with pytest.raises(ValidationError, match=r"^x:"):
        parse_duration(value, field="x")


@pytest.mark.parametrize(("health", "expect"), [
    ({"http": "/healthz", "port": 8080}, HealthCheck(kind="http", path="/healthz", port=8080)),
    ({"tcp": 8080, "interval": "1s", "retries": 5}, HealthCheck(kind="tcp", port=8080, interval=1.0, retries=5)),
    ({"cmd": ["true"], "start_period": "30s"}, HealthCheck(kind="cmd", cmd=("true",), start_period=30.0)),
    ("docker", HealthCheck(kind="docker")),
    ({"docker": True, "restart_unhealthy_after": "1m"}, HealthCheck(kind="docker", restart_unhealthy_after=60.0)),
])
def test_health_checks_parse(health: object, expect: HealthCheck) -> None:
    s = spec(health=health)
    assert s.health == expect
    assert ServiceSpec.from_dict(s.to_dict(), name=WEB) == s  # round trip


@pytest.mark.parametrize(("health", "message"), [
    ({"http": "/x", "tcp": 80}, "exactly one"),
    ({"http": "no-slash", "port": 8080}, "absolute URL path"),
    ({"http": "/x", "port": 9999}, "not published"),
    ({"tcp": 8080, "retries": 0}, "1..100"),
    ({"tcp": 8080, "interval": "10ms"}, ">= 100ms"),
    ({"tcp": 8080, "colour": "red"}, "unknown field"),
    ({"cmd": []}, "non-empty list"),
    ({"cmd": "true"}, "non-empty list"),
    ({"docker": False}, "docker"),
    ("sometimes", "must be"),
])
def test_bad_health_checks_are_refused_with_the_field(health: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as err:
        spec(health=health)
    assert "health" in str(err.value)


def test_update_policy_defaults_and_validation() -> None:
    assert spec().update == UpdatePolicy()
    s = spec(update={"parallel": 3, "order": "stop-first", "min_healthy": "2s", "deadline": "1m",
                     "on_failure": "pause"})
    assert s.update == UpdatePolicy(parallel=3, order="stop-first", min_healthy=2.0, deadline=60.0, on_failure="pause")
    for bad, message in [({"parallel": 0}, "1..100"), ({"order": "random"}, "start-first"),
                         ({"on_failure": "ignore"}, "rollback"), ({"min_healthy": "1m", "deadline": "30s"}, "longer"),
                         ({"surge": 1}, "unknown field")]:
        with pytest.raises(ValidationError, match=message):
            spec(update=bad)


def test_lifecycle_fields_are_not_part_of_what_containers_are_made_of() -> None:
    """Changing the check, the policy or the stop grace rolls nothing out; env does."""
    plain = spec()
    assert spec(health={"tcp": 8080}, update={"parallel": 2}, stop_signal="QUIT",
                stop_timeout="30s").runtime_hash == plain.runtime_hash
    assert spec(env={"A": "1"}).runtime_hash != plain.runtime_hash


@pytest.mark.parametrize(("value", "signal"), [("SIGQUIT", "SIGQUIT"), ("quit", "SIGQUIT"), (None, None)])
def test_stop_signal(value: object, signal: str | None) -> None:
    assert parse_stop_signal(value) == signal


def test_bad_stop_signal_and_timeout() -> None:
    with pytest.raises(ValidationError, match="stop_signal"):
        spec(stop_signal="SIGSEGV")
    with pytest.raises(ValidationError, match="stop_timeout"):
        spec(stop_timeout="2h")


def test_rollout_records_round_trip_and_refuse_garbage() -> None:
    r = RolloutRecord(version=3, target="h3", previous_version=2, previous="h2", state="paused", reason="x", at=1.5)
    assert RolloutRecord.from_dict(r.to_dict()) == r
    s = Slot(node="n1", instance=4, since=2.0)
    assert Slot.from_dict(s.to_dict()) == s
    h = HistoryEntry(version=1, spec={"image": "a"}, at=1.0, cause="rollback to 1")
    assert HistoryEntry.from_dict(h.to_dict()) == h
    for bad in [[], {"state": "exploded"}, {"version": -1}, {"target": 5}]:
        with pytest.raises(ValidationError):
            RolloutRecord.from_dict(bad)


# ------------------------------------------------------------------ progress and status
def rec(n: int, *, spec_hash: str, health: str = "healthy", state: str = "running", node: str = "n1") -> InstanceRecord:
    return InstanceRecord(service=WEB, number=n, node=node, address="127.0.0.11", state=state,  # type: ignore[arg-type]
                          spec_hash=spec_hash, health=health)  # type: ignore[arg-type]


def cluster(s: ServiceSpec, records: list[InstanceRecord], **kw: Any) -> ClusterState:
    return ClusterState(services={WEB: s}, instances={r.key_tuple: r for r in records}, nodes={}, revision=1, **kw)


def test_progress_counts_updated_healthy_outdated_and_replacements() -> None:
    new = spec(env={"V": "2"}, health={"tcp": 8080})
    old_hash = spec(health={"tcp": 8080}).runtime_hash
    state = cluster(new, [rec(1, spec_hash=new.runtime_hash), rec(2, spec_hash=old_hash)],
                    slots={WEB: {1: Slot(node="n1", instance=2)}})
    p = progress(state, new)
    assert (p.running, p.healthy, p.outdated, p.replacing, p.done) == (1, 1, 1, ("instance 2 on n1",), False)
    assert "1/2 updated and healthy" in p.line(WEB)
    starting = cluster(new, [rec(1, spec_hash=new.runtime_hash), rec(2, spec_hash=new.runtime_hash,
                                                                     health="starting")])
    assert not progress(starting, new).done  # running but not yet healthy
    done = cluster(new, [rec(1, spec_hash=new.runtime_hash), rec(2, spec_hash=new.runtime_hash)])
    assert progress(done, new).done


def test_progress_says_when_the_written_spec_was_rolled_back_or_paused() -> None:
    bad, good = spec(env={"V": "bad"}), spec()
    back = RolloutRecord(version=4, target=good.runtime_hash, previous_version=3, previous=bad.runtime_hash,
                         state="rolled-back", reason="instance 1 on n1: not healthy")
    state = cluster(good, [rec(1, spec_hash=good.runtime_hash), rec(2, spec_hash=good.runtime_hash)],
                    rollouts={WEB: back})
    assert progress(state, bad).halted == "rolled back: instance 1 on n1: not healthy"
    assert not progress(state, good).halted
    paused = cluster(bad, [], rollouts={WEB: RolloutRecord(version=3, target=bad.runtime_hash, state="paused",
                                                           reason="r")})
    assert progress(paused, bad).halted == "paused: r"
    # the spec and its rollout record change in one transaction; a reader between the two events
    # must not call the rollout replaced
    mid = cluster(good, [], rollouts={WEB: RolloutRecord(version=3, target=bad.runtime_hash)})
    assert not progress(mid, bad).halted


def test_rollout_row_phases() -> None:
    s = spec()
    complete = cluster(s, [rec(1, spec_hash=s.runtime_hash), rec(2, spec_hash=s.runtime_hash)],
                       rollouts={WEB: RolloutRecord(version=2, target=s.runtime_hash)})
    assert rollout_row(complete, WEB)["rollout"] == "complete"
    rolling = cluster(s, [rec(1, spec_hash=s.runtime_hash)], rollouts={WEB: RolloutRecord(version=2,
                                                                                          target=s.runtime_hash)})
    assert rollout_row(rolling, WEB)["rollout"] == "rolling"
    assert rollout_row(cluster(s, []), WEB)["rollout"] == "-"


@pytest.mark.parametrize(("draining", "held", "expect"), [
    (frozenset(), 2, "ready"), (frozenset({"n1"}), 2, "draining"), (frozenset({"n1"}), 0, "drained")])
def test_node_state(draining: frozenset[str], held: int, expect: str) -> None:
    state = ClusterState(services={}, instances={}, nodes={}, revision=1, draining=draining)
    assert node_state(state, "n1", held) == expect


# ------------------------------------------------------------------ svc set flags
def test_health_and_update_flags_merge_onto_the_stored_spec() -> None:
    stored = spec(health={"http": "/healthz", "port": 8080, "interval": "2s"}, update={"parallel": 2}).to_dict()
    merged = merge_flags(stored, {"health": health_flags(retries=5), "update": update_flags(order="stop-first")})
    s = ServiceSpec.from_dict(merged, name=WEB)
    assert s.health == HealthCheck(kind="http", path="/healthz", port=8080, interval=2.0, retries=5)
    assert (s.update.parallel, s.update.order) == (2, "stop-first")
    # a new kind replaces the old one (and its port), keeping the timing
    s = ServiceSpec.from_dict(merge_flags(stored, {"health": health_flags(tcp=8080)}), name=WEB)
    assert s.health == HealthCheck(kind="tcp", port=8080, interval=2.0)
    # --no-health drops it
    assert ServiceSpec.from_dict(merge_flags(stored, {"health": health_flags(none=True)}), name=WEB).health is None


def test_health_flag_errors() -> None:
    with pytest.raises(ValidationError, match="one of"):
        health_flags(http="/x", tcp=80)
    with pytest.raises(ValidationError, match="cannot be combined"):
        health_flags(none=True, retries=2)
    with pytest.raises(ValidationError, match="need a check"):
        merge_lifecycle("health", None, {"retries": 2})
    assert health_flags(cmd="curl -f localhost") == {"cmd": ["sh", "-c", "curl -f localhost"]}
    assert health_flags(cmd='["true"]') == {"cmd": ["true"]}
    assert health_flags() is None and update_flags() is None


# ------------------------------------------------------------------ what serves during a rollout
def test_local_view_serves_the_container_the_record_names_not_a_replacement_beside_it() -> None:
    r = replace(rec(1, spec_hash="h"), container_id="old", ports=(("8080/tcp", 1000),))
    old = ContainerInfo(id="old", service=WEB, number=1, node="n1", spec_hash="h", running=True,
                        ports=(("8080/tcp", 1000),), created=1.0)
    beside = replace(old, id="new", ports=(("8080/tcp", 2000),), created=2.0, spec_hash="h2")
    state = ClusterState(services={}, instances={r.key_tuple: r}, nodes={}, revision=1)
    view = local_view(state, node_id="n1", routable=[old, beside])
    assert view.instances[r.key_tuple].ports == (("8080/tcp", 1000),)
    # the old one crashed: the newest running container is served
    view = local_view(state, node_id="n1", routable=[beside])
    assert view.instances[r.key_tuple].container_id == "new"


def test_slot_and_rollout_changes_do_not_move_the_routing_version() -> None:
    schema = KeySchema("/t")
    m = StateMirror(schema=schema)
    m.reset([], revision=1)
    v = m.routing_version
    m.apply(WatchEvent(kind="put", key=schema.slot(WEB, 1), value=dumps(Slot(node="n1", instance=1).to_dict()),
                       revision=2, lease=5))
    m.apply(WatchEvent(kind="put", key=schema.rollout(WEB), value=dumps(RolloutRecord(version=1, target="h")
                                                                        .to_dict()), revision=3))
    m.apply(WatchEvent(kind="put", key=schema.drain("n1"), value=b'{"by": "operator"}', revision=4))
    assert m.routing_version == v
    state = m.state()
    assert state.slots[WEB][1].node == "n1" and state.rollouts[WEB].target == "h" and state.draining == {"n1"}
    m.apply(WatchEvent(kind="put", key=schema.service(WEB), value=dumps(spec().to_dict()), revision=5))
    assert m.routing_version == v + 1


def test_the_mirror_keeps_history_entries_and_slot_create_revisions() -> None:
    schema = KeySchema("/t")
    m = StateMirror(schema=schema)
    m.reset([], revision=1)
    entry = HistoryEntry(version=3, spec=spec().to_dict(), cause="set")
    m.apply(WatchEvent(kind="put", key=schema.history(WEB, 3), value=dumps(entry.to_dict()), revision=2))
    m.apply(WatchEvent(kind="put", key=schema.slot(WEB, 1), value=dumps(Slot(node="n1", instance=1).to_dict()),
                       revision=3, lease=5, create_revision=3))
    state = m.state()
    assert state.history[WEB][3] == entry
    assert state.slots[WEB][1].create_revision == 3


ROLLBACK_CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    # (case, previous version's extra fields, the failed current one's, what the rollback writes)
    ("containers come back, the instance count stays",
     {"env": {"V": "1"}}, {"env": {"V": "2"}, "instances": 7}, {"env": {"V": "1"}, "instances": 7}),
    ("the route stays as it is now", {"http_host": "a.test", "image": "busybox:1"},
     {"http_host": "b.test", "image": "busybox:2"}, {"http_host": "b.test", "image": "busybox:1"}),
    ("a route removed with the update stays removed", {"http_host": "a.test", "cmd": ["a"]}, {"cmd": ["b"]},
     {"cmd": ["a"]}),
    ("the update policy stays", {"labels": {"v": "1"}}, {"labels": {"v": "2"}, "update": {"parallel": 3}},
     {"labels": {"v": "1"}, "update": {"parallel": 3}}),
    ("the check and stop grace the old containers ran with come back",
     {"health": {"tcp": 8080}, "stop_signal": "SIGQUIT", "env": {"V": "1"}},
     {"health": {"http": "/h", "port": 8080}, "stop_timeout": "30s", "env": {"V": "2"}},
     {"health": {"tcp": 8080}, "stop_signal": "SIGQUIT", "env": {"V": "1"}}),
    ("a route that needs a port the old version did not publish: the old route comes back",
     {"http_port": None, "ports": [9000]}, {"http_host": "b.test", "ports": [9000]},
     {"http_port": None, "ports": [9000]}),
]


@pytest.mark.parametrize(("case", "before", "now", "expected"), ROLLBACK_CASES, ids=[c[0] for c in ROLLBACK_CASES])
def test_an_automatic_rollback_brings_back_what_rolled_out(
    case: str, before: dict[str, Any], now: dict[str, Any], expected: dict[str, Any]
) -> None:
    previous, current = spec(**before), spec(**now)
    back = rollback_spec(current, previous)
    assert back == spec(**expected)
    assert back.runtime_hash == previous.runtime_hash
    assert rollback_spec(None, previous) == previous
