"""Property tests: the mirror's state, kept per event, equals a fresh build of the same keys.

After any random sequence of puts and deletes (every key kind, good values and garbage, resyncs
in between), :meth:`StateMirror.state` equals :func:`assemble_state` over the mirror's keys,
its indexes (by service, node, lease; unowned numbers) equal a fresh index, and a state handed
out earlier never changed afterwards (copy on write).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daprdockr.core import instance_index
from daprdockr.core.dns.delta import apply_zone_delta, zone_delta
from daprdockr.core.dns.zone import Zone
from daprdockr.core.instance_index import InstanceIndex, changed_services
from daprdockr.core.keys import KeySchema
from daprdockr.core.local_view import LocalView, local_view
from daprdockr.core.mirror import StateMirror, WatchEvent
from daprdockr.core.names import ServiceName
from daprdockr.core.routing import RoutingCache, routed_removed, routing_table
from daprdockr.core.state import ClusterState, RawKV, assemble_state, decode_entry

SCHEMA = KeySchema("/dd")
SERVICES = [ServiceName.parse(n) for n in ("web.a", "api.a", "web.b")]
NODES = ["n1", "n2", "n3"]


def _spec(instances: int, host: str = "h.test") -> bytes:
    return json.dumps({"image": "busybox", "instances": instances, "http_host": host, "http_port": 80}).encode()


def _record(node: str, state: str) -> bytes:
    return json.dumps({"node": node, "address": f"127.0.0.{NODES.index(node) + 11}", "state": state,
                       "ports": {"80/tcp": 8000}}).encode()


GARBAGE = st.sampled_from([b"{", b"[]", b'"x"', b'{"instances": -1}', b"\xff"])
SERVICE = st.sampled_from(SERVICES)
NODE = st.sampled_from(NODES)


@st.composite
def puts(draw: st.DrawFn) -> tuple[str, bytes, int]:
    """(key, value, lease) of any kind, good or garbage."""
    svc = draw(SERVICE)
    kind = draw(st.sampled_from(["service", "instance", "instance", "instance", "node", "applied", "drain",
                                 "rollout", "slot", "history"]))
    good = draw(st.booleans()) or draw(st.booleans())
    lease = draw(st.sampled_from([0, 7, 7, 8, 9]))
    node = draw(NODE)
    if kind == "service":
        host = draw(st.sampled_from(["h.test", f"{svc.service}.{svc.group}.test"]))  # (two may claim one)
        key, value = SCHEMA.service(svc), _spec(draw(st.integers(0, 4)), host)
    elif kind == "instance":
        key = SCHEMA.instance(svc, draw(st.integers(1, 5)))
        value = _record(node, draw(st.sampled_from(["running", "running", "starting", "failed", "paused"])))
    elif kind == "node":
        key, value = SCHEMA.node(node), json.dumps({"address": "127.0.0.11", "capacity": 3}).encode()
    elif kind == "applied":
        key, value = SCHEMA.applied(node), json.dumps({"revision": draw(st.integers(0, 50))}).encode()
    elif kind == "drain":
        key, value = SCHEMA.drain(node), b"{}"
    elif kind == "rollout":
        key, value = SCHEMA.rollout(svc), json.dumps({"version": 2, "target": "t", "state": "rolling"}).encode()
    elif kind == "slot":
        index = draw(st.integers(1, 2))
        key, value = SCHEMA.slot(svc, index), json.dumps({"node": node, "instance": 1, "target": "t"}).encode()
    else:
        version = draw(st.integers(1, 3))
        spec = json.loads(_spec(2)) if draw(st.booleans()) else {"image": ""}
        key, value = SCHEMA.history(svc, version), json.dumps({"version": version, "spec": spec}).encode()
    return key, value if good else draw(GARBAGE), lease


EVENTS = st.lists(st.one_of(puts().map(lambda p: ("put", *p)),
                            puts().map(lambda p: ("delete", p[0], b"", 0)),
                            st.just(("resync", "", b"", 0)),
                            st.just(("snapshot", "", b"", 0))), min_size=30, max_size=100)


def step(mirror: StateMirror, kind: str, key: str, value: bytes, lease: int, *, revision: int) -> None:
    """One event of :data:`EVENTS` applied to ``mirror``: a put, a delete or a resync (a fresh list)."""
    if kind == "put":
        mirror.apply(WatchEvent(kind="put", key=key, value=value, revision=revision, lease=lease))
    elif kind == "delete":
        mirror.apply(WatchEvent(kind="delete", key=key, revision=revision))
    elif kind == "resync":
        mirror.reset(list(mirror._kvs.values()), revision=revision)


def fresh(mirror: StateMirror) -> ClusterState:
    kvs = list(mirror._kvs.values())
    return assemble_state(SCHEMA, ((kv, decode_entry(SCHEMA, kv)) for kv in kvs), revision=mirror.revision,
                          last_good=mirror._last_good)


def same(got: ClusterState, want: ClusterState) -> None:
    assert got == want
    assert dict(got.unowned) == dict(want.unowned)
    index, clean = got.index, InstanceIndex.build(dict(want.instances))
    assert {k: dict(v) for k, v in index.by_service.items()} == {k: dict(v) for k, v in clean.by_service.items()}
    by_node: dict[str, dict[tuple[ServiceName, int], object]] = {}
    by_lease: dict[int, dict[tuple[ServiceName, int], object]] = {}
    for key, rec in index.items():  # (grouped here from its per-service records, not by its own code)
        by_node.setdefault(rec.node, {})[key] = rec
        by_lease.setdefault(rec.lease, {})[key] = rec
    for groups, plain in ((index.by_node, by_node), (index.by_lease, by_lease)):
        assert {k: dict(v) for k, v in groups.items()} == plain
        assert {k: dict(v.items()) for k, v in groups.items()} == plain
        assert {k: (len(v), sorted(map(id, v.values()))) for k, v in groups.items()} == \
            {k: (len(v), sorted(map(id, v.values()))) for k, v in plain.items()}
    assert len(index) == len(clean)


@settings(max_examples=300, deadline=None)
@given(EVENTS)
def test_the_state_kept_per_event_equals_a_fresh_build(events: list[tuple[str, str, bytes, int]]) -> None:
    mirror = StateMirror(schema=SCHEMA)
    mirror.reset([], revision=1)
    revision = 1
    handed: list[tuple[ClusterState, ClusterState]] = []
    for kind, key, value, lease in events:
        revision += 1
        if kind == "put":
            mirror.apply(WatchEvent(kind="put", key=key, value=value, revision=revision, lease=lease,
                                    create_revision=revision))
        elif kind == "delete":
            mirror.apply(WatchEvent(kind="delete", key=key, revision=revision))
        elif kind == "resync":  # a full read of the same keys at a newer revision
            mirror.reset([RawKV(key=kv.key, value=kv.value, lease=kv.lease, create_revision=kv.create_revision,
                                mod_revision=kv.mod_revision) for kv in mirror._kvs.values()], revision=revision)
        else:
            handed.append((mirror.state(), fresh(mirror)))
    same(mirror.state(), fresh(mirror))
    for got, want in handed:  # copy on write: what was handed out never changed
        same(got, want)


@settings(max_examples=100, deadline=None)
@given(EVENTS)
def test_changed_services_names_every_service_whose_records_changed(events: list[tuple[str, str, bytes, int]]) -> None:
    mirror = StateMirror(schema=SCHEMA)
    mirror.reset([], revision=1)
    before = mirror.state()
    for revision, (kind, key, value, lease) in enumerate(events, start=2):
        if kind in ("put", "delete"):  # (a resync here would mark every service: not this test's question)
            step(mirror, kind, key, value, lease, revision=revision)
    after = mirror.state()
    changed = changed_services(before.index, after.index)
    for name in SERVICES:
        if dict(before.index.of_service(name)) != dict(after.index.of_service(name)):
            assert name in changed


def _served(state: ClusterState) -> set[tuple[object, ...]]:
    return {(k, r.address, r.ports) for k, r in state.instances.items() if r.routable}


@settings(max_examples=200, deadline=None)
@given(EVENTS)
def test_the_routing_table_and_the_zone_kept_per_service_equal_fresh_builds(
    events: list[tuple[str, str, bytes, int]],
) -> None:
    """One RoutingCache, one Zone and a DNS worker's state (fed deltas) follow every state the
    mirror hands out (and a local view of node n1 that drops its records); each equals a fresh
    build of that state."""
    mirror = StateMirror(schema=SCHEMA)
    mirror.reset([], revision=1)
    cache, zone, view = RoutingCache(), Zone(mirror.state()), LocalView(node_id="n1")
    last = mirror.state()
    worker = apply_zone_delta(ClusterState(), zone_delta(None, last))  # what a DNS worker process holds
    for revision, (kind, key, value, lease) in enumerate(events, start=2):
        step(mirror, kind, key, value, lease, revision=revision)
        state = mirror.state()
        if kind == "snapshot":
            kept = view.view(state, routable=[])
            state = local_view(state, node_id="n1", routable=[])
            assert kept == state
        assert cache.table(state) == routing_table(state)
        zone.update(state)
        assert zone.names() == Zone(state).names()
        assert routed_removed(last, state) == bool(_served(last) - _served(state))
        worker = apply_zone_delta(worker, zone_delta(last, state))
        assert Zone(worker).names() == Zone(state).names() and worker.revision == state.revision
        last = state


def test_changed_services_beyond_the_log_falls_back_to_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(instance_index, "LOG_LENGTH", 3)
    mirror = StateMirror(schema=SCHEMA)
    mirror.reset([], revision=1)
    first = mirror.state()
    states = []
    for revision, name in enumerate(SERVICES * 2, start=2):
        mirror.apply(WatchEvent(kind="put", key=SCHEMA.instance(name, revision), value=_record("n1", "running"),
                                revision=revision, lease=7))
        states.append(mirror.state())
    assert changed_services(states[-2].index, states[-1].index) == {SERVICES[-1]}  # from the log
    assert first.index.log.since(first.index.gen, states[-1].index.gen) is None  # the log no longer reaches back
    assert changed_services(first.index, states[-1].index) == set(SERVICES)  # by identity


def test_a_change_copies_one_service_of_its_node_not_every_record_the_node_holds() -> None:
    """With 3 nodes each holds a third of the cluster: a record changed after a snapshot copied
    that node's and that lease's whole dict (33 000 records at 100 000 instances, 2.6 ms per event
    in ``bench/scale_bench.py --nodes 3``); now only its service's dict in them is new."""
    mirror = StateMirror(schema=SCHEMA)
    kvs = [RawKV(key=SCHEMA.instance(svc, n), value=_record("n1", "running"), lease=7, create_revision=2,
                 mod_revision=2) for svc in SERVICES for n in range(1, 5)]
    mirror.reset(kvs, revision=3)
    before = mirror.state().index
    mirror.apply(WatchEvent(kind="put", key=SCHEMA.instance(SERVICES[0], 1), value=_record("n1", "failed"),
                            revision=4, lease=7, create_revision=2))
    after = mirror.state().index
    for groups_before, groups_after, group in ((before.by_node, after.by_node, "n1"),
                                               (before.by_lease, after.by_lease, 7)):
        held_before, held_after = groups_before[group], groups_after[group]
        assert held_before is not held_after and len(held_after) == len(held_before) == 12
        assert held_after[(SERVICES[0], 1)].state == "failed" and held_before[(SERVICES[0], 1)].state == "running"
        assert all(held_after.by_service[svc] is held_before.by_service[svc] for svc in SERVICES[1:])  # type: ignore[attr-defined]
