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
    assert S.service_instances(WEB) == "/dd/instances/myapp/web/"


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
