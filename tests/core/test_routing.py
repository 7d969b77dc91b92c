"""Table tests for the routing table and its updates (pure)."""

from __future__ import annotations

import json

from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from daprdockr.core.routing import removed_peers, removes_backends, routing_table, table_update
from daprdockr.core.state import ClusterState

WEB = ServiceName(group="myapp", service="web")
API = ServiceName(group="myapp", service="api")
DUP = ServiceName(group="zz", service="zdup")  # sorts after web.myapp


def rec(name: ServiceName, n: int, node: str, addr: str, port: int, state: str = "running") -> InstanceRecord:
    return InstanceRecord(service=name, number=n, node=node, address=addr, state=state,  # type: ignore[arg-type]
                          ports=(("8080/tcp", port),))


SPECS = {
    WEB: ServiceSpec(name=WEB, image="x", instances=5, http_host="web.example.com", http_port=8080),
    API: ServiceSpec(name=API, image="x", instances=1, http_host="api.example.com", http_port=8080),
    DUP: ServiceSpec(name=DUP, image="x", instances=1, http_host="web.example.com", http_port=8080),
}


def test_peers_are_interleaved_across_nodes_and_only_running_ones_count() -> None:
    state = ClusterState(services=SPECS, instances={
        (WEB, 1): rec(WEB, 1, "n1", "127.0.0.11", 31001), (WEB, 2): rec(WEB, 2, "n1", "127.0.0.11", 31002),
        (WEB, 3): rec(WEB, 3, "n1", "127.0.0.11", 31003), (WEB, 4): rec(WEB, 4, "n2", "::1", 31004),
        (WEB, 5): rec(WEB, 5, "n3", "not-an-ip", 31005), (API, 1): rec(API, 1, "n2", "127.0.0.12", 1, "starting"),
        (DUP, 1): rec(DUP, 1, "n2", "127.0.0.12", 39999),
    })
    table = routing_table(state)
    assert table == {
        "web.example.com": ("127.0.0.11:31001", "[::1]:31004", "127.0.0.11:31002", "127.0.0.11:31003"),
        "api.example.com": (),  # known, nothing running: 503
    }  # the second service claiming web.example.com does not take it over


def test_updates_carry_only_what_changed_or_everything_after_a_start() -> None:
    old = {"a.test": ("127.0.0.1:1",), "b.test": (), "c.test": ("127.0.0.1:3",)}
    new = {"a.test": ("127.0.0.1:1", "127.0.0.1:2"), "b.test": (), "d.test": ()}
    assert table_update(old, new, generation=4) == b"set a.test 127.0.0.1:1 127.0.0.1:2\nset d.test\ndel c.test\n"
    assert table_update(None, {"b.test": ()}, generation=4) == b"full 4\nset b.test\n"
    assert table_update(new, new, generation=4) == b""


def test_removals_are_detected() -> None:
    a = {"a.test": ("p1", "p2")}
    assert removes_backends(a, {"a.test": ("p1",)})
    assert removes_backends(a, {})
    assert not removes_backends(a, {"a.test": ("p2", "p1", "p3")})


def test_a_frozen_service_keeps_the_route_of_its_newest_stored_version() -> None:
    """Regression: an agent that never saw a good version of a spec (started while it was bad)
    dropped its host from nginx (404) although the instances ran; the route now comes from the
    newest history entry, through the state decoder."""
    from daprdockr.core.keys import KeySchema
    from daprdockr.core.rollout import HistoryEntry
    from daprdockr.core.state import RawKV, decode_state

    schema = KeySchema("/p")
    good = ServiceSpec(name=WEB, image="x", instances=1, http_host="web.example.com", http_port=8080).to_dict()
    old = {**good, "http_host": "old.example.com"}
    kvs = [
        RawKV(key=schema.service(WEB), value=b'{"image": "x", "instances": "2"}'),
        RawKV(key=schema.history(WEB, 1), value=json.dumps(HistoryEntry(version=1, spec=old).to_dict()).encode()),
        RawKV(key=schema.history(WEB, 2), value=json.dumps(HistoryEntry(version=2, spec=good).to_dict()).encode()),
        RawKV(key=schema.instance(WEB, 1), lease=5,
              value=json.dumps({"node": "n1", "address": "127.0.0.11", "state": "running",
                                "ports": {"8080/tcp": 31001}}).encode()),
    ]
    state = decode_state(schema, kvs)
    assert WEB in state.frozen and state.frozen_routes == {WEB: ("web.example.com", 8080)}
    assert routing_table(state) == {"web.example.com": ("127.0.0.11:31001",)}
    # without history the host is unknown: no route (never a wrong one)
    assert routing_table(decode_state(schema, [kvs[0], kvs[3]])) == {}


def test_a_proxy_policy_puts_its_options_in_front_of_the_peers_and_defaults_add_none() -> None:
    tuned = ServiceSpec.from_dict({"image": "x", "http_host": "web.example.com", "http_port": 8080,
                                   "proxy": {"balancer": "round-robin", "read_timeout": "1500ms"}}, name=WEB)
    state = ClusterState(services={WEB: tuned, API: SPECS[API]},
                         instances={(WEB, 1): rec(WEB, 1, "n1", "127.0.0.11", 31001)})
    table = routing_table(state)
    assert table["web.example.com"] == ("lb=round-robin", "read=1.5", "127.0.0.11:31001")
    assert table["api.example.com"] == ()
    # an option changing is no peer removed; a peer going is
    assert not removes_backends(table, {**table, "web.example.com": ("read=2", "127.0.0.11:31001")})
    assert removes_backends(table, {**table, "web.example.com": ("lb=round-robin", "read=1.5")})


def test_removed_peers_are_the_addresses_served_before_and_not_now() -> None:
    old = {"a.test": ("read=2", "127.0.0.11:1", "[::1]:2"), "b.test": ("127.0.0.12:3",)}
    new = {"a.test": ("127.0.0.11:1",), "c.test": ("127.0.0.12:3",)}
    assert removed_peers(old, new) == {("::1", 2)}
    assert removed_peers(old, {}) == {("127.0.0.11", 1), ("::1", 2), ("127.0.0.12", 3)}
