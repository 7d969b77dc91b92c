"""The etcd key schema: every key parses back to what it names, anything else to None."""

from __future__ import annotations

import pytest

from daprdockr.core.keys import KeySchema
from daprdockr.core.names import ServiceName
from daprdockr.errors import ValidationError

S = KeySchema("/dd")
WEB = ServiceName(group="myapp", service="web")


def test_round_trips() -> None:
    assert S.parse(S.service(WEB)) == S.parse("/dd/services/myapp/web")
    parsed = S.parse(S.instance(WEB, 12))
    assert parsed is not None and parsed.kind == "instance" and parsed.service == WEB and parsed.number == 12
    node = S.parse(S.node("n1"))
    assert node is not None and node.kind == "node" and node.node_id == "n1"



@pytest.mark.parametrize(
    ("key", "kind", "service", "number", "node"),
    [
        (S.applied("n1"), "applied", None, 0, "n1"),
        (S.drain("n2"), "drain", None, 0, "n2"),
        (S.rollout(WEB), "rollout", WEB, 0, ""),
        (S.history(WEB, 7), "history", WEB, 7, ""),
        (S.slot(WEB, 2), "slot", WEB, 2, ""),
    ],
)
def test_lifecycle_keys_round_trip(key: str, kind: str, service: ServiceName | None, number: int, node: str) -> None:
    parsed = S.parse(key)
    assert parsed is not None
    assert (parsed.kind, parsed.service, parsed.number, parsed.node_id) == (kind, service, number, node)


def test_the_prefixes_of_one_service_hold_its_keys_and_no_other_services() -> None:
    web2 = ServiceName(group="myapp", service="web2")
    for prefix, key, other in ((S.instances_of(WEB), S.instance(WEB, 3), S.instance(web2, 3)),
                               (S.slots_of(WEB), S.slot(WEB, 1), S.slot(web2, 1)),
                               (S.nodes_prefix, S.node("n1"), S.drain("n1"))):
        assert prefix.endswith("/") and key.startswith(prefix) and not other.startswith(prefix)


def test_history_versions_sort_as_text() -> None:
    """Zero-padded: a prefix listing returns versions in order (9 before 10)."""
    assert S.history(WEB, 9) < S.history(WEB, 10) and S.history(WEB).endswith("/myapp/web/")


@pytest.mark.parametrize("key", ["/dd/history/myapp/web/123456789", "/dd/slots/myapp/web/x", "/dd/rollouts/myapp",
                                 "/dd/applied/n1/x", "/dd/drain/N1"])
def test_malformed_lifecycle_keys_are_none(key: str) -> None:
    assert S.parse(key) is None


@pytest.mark.parametrize("key", [
    "/other/services/myapp/web", "/dd/services/myapp", "/dd/services/MyApp/web", "/dd/instances/myapp/web/0",
    "/dd/instances/myapp/web/01", "/dd/instances/myapp/web/x", "/dd/instances/myapp/web/1234567",
    "/dd/nodes/n1/extra", "/dd/nodes/-n1", "/dd/random/key", "/dd/services/my\napp/web", "/dd/",
])
def test_anything_else_is_none(key: str) -> None:
    assert S.parse(key) is None


@pytest.mark.parametrize("prefix", ["dd", "/dd/", "/a//b", ""])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValidationError):
        KeySchema(prefix)
