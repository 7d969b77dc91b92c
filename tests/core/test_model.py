"""The service spec model: strict parsing, bounds, and derived values computed once."""

from __future__ import annotations

import json

import pytest

from daprdockr.core.jsondata import MAX_RECORD_BYTES
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import MAX_PORTS, ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.state import RawKV, decode_state
from daprdockr.errors import ValidationError

WEB = ServiceName(group="myapp", service="web")


def parse(**fields: object) -> ServiceSpec:
    return ServiceSpec.from_dict({"image": "busybox", **fields}, name=WEB)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ports": list(range(1000, 1000 + MAX_PORTS + 1))}, "at most 64"),
        ({"env": {f"K{i}": "v" for i in range(257)}}, "at most 256"),
        ({"labels": {f"k{i}": "v" for i in range(65)}}, "at most 64"),
        ({"cmd": ["x"] * 257}, "at most 256"),
        ({"cmd": ["x" * 9000]}, "longer than 8192"),
        ({"env": {"A": "x" * 9000}}, "longer than 8192"),
        ({"env": {f"K{i}": "x" * 8000 for i in range(9)}}, f"at most {MAX_RECORD_BYTES}"),
        ({"instances": "2"}, "must be an integer"),
        ({"replicas": 2}, "unknown field"),
    ],
)
def test_bounds_and_bad_fields_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse(**fields)


def test_sixty_four_ports_are_fine_and_derived_values_are_computed_once() -> None:
    spec = parse(ports=list(range(2000, 2000 + MAX_PORTS)), http_port=8080)
    assert len(spec.container_ports()) == MAX_PORTS + 1
    assert spec.container_ports()[0].port == 8080
    assert spec.container_ports() is spec.container_ports()  # cached, not recomputed
    assert spec.runtime_hash == parse(ports=list(range(2000, 2000 + MAX_PORTS)), http_port=8080).runtime_hash


def test_http_port_listed_in_ports_is_published_once() -> None:
    spec = parse(ports=[8080, "53/udp"], http_port=8080)
    assert [str(p) for p in spec.container_ports()] == ["8080/tcp", "53/udp"]


def test_runtime_hash_ignores_instances_and_http_host() -> None:
    a = parse(instances=1, http_port=80, http_host="a.example.com")
    b = parse(instances=5, http_port=80, http_host="b.example.com")
    c = parse(instances=1, http_port=80, env={"A": "1"})
    assert a.runtime_hash == b.runtime_hash != c.runtime_hash


def test_readers_refuse_oversized_values_before_parsing_them() -> None:
    schema = KeySchema("/p")
    huge = json.dumps({"image": "busybox", "env": {"A": "x" * (MAX_RECORD_BYTES + 10)}}).encode()
    state = decode_state(schema, [RawKV(key="/p/services/myapp/web", value=huge, mod_revision=3)])
    assert WEB in state.invalid_services and "bytes" in state.invalid_services[WEB]
    assert state.frozen == {WEB}


def test_instance_key_on_no_lease_is_invalid_but_taken() -> None:
    schema = KeySchema("/p")
    value = json.dumps({"node": "n1", "address": "127.0.0.11", "state": "running"}).encode()
    state = decode_state(schema, [
        RawKV(key="/p/instances/myapp/web/1", value=value, lease=0, create_revision=4, mod_revision=9),
        RawKV(key="/p/instances/myapp/web/2", value=value, lease=77, create_revision=5, mod_revision=10),
        RawKV(key="/p/instances/myapp/web/3", value=b"{nope", lease=77, create_revision=6, mod_revision=11),
    ])
    assert list(state.instances) == [(WEB, 2)]
    leaseless, garbage = state.invalid_instances[(WEB, 1)], state.invalid_instances[(WEB, 3)]
    assert leaseless.mod_revision == 9 and "no lease" in leaseless.reason
    assert garbage.lease == 77 and garbage.create_revision == 6
