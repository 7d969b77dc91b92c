"""Table tests for a service's proxy policy (pure)."""

from __future__ import annotations

import pytest

from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.proxypolicy import ProxyPolicy
from daprdockr.errors import ValidationError

WEB = ServiceName(group="myapp", service="web")


@pytest.mark.parametrize(("value", "expected"), [
    (None, ProxyPolicy()),
    ({}, ProxyPolicy()),
    ({"balancer": "round-robin"}, ProxyPolicy(balancer="round-robin")),
    ({"connect_timeout": "250ms", "read_timeout": 5}, ProxyPolicy(connect_timeout=0.25, read_timeout=5.0)),
])
def test_good_policies(value: object, expected: ProxyPolicy) -> None:
    assert ProxyPolicy.parse(value) == expected
    assert ProxyPolicy.parse(expected.to_dict()) == expected


@pytest.mark.parametrize(("value", "field"), [
    ("fast", "proxy"),
    ({"balancer": "random"}, "proxy.balancer"),
    ({"read_timeout": "forever"}, "proxy.read_timeout"),
    ({"connect_timeout": "20m"}, "proxy.connect_timeout"),
    ({"read_timeout": 0}, "proxy"),
    ({"retries": 3}, "proxy"),
])
def test_bad_policies_name_their_field(value: object, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        ProxyPolicy.parse(value)
    assert err.value.field == field


def test_defaults_are_not_stored_and_leave_the_runtime_hash_alone() -> None:
    """Older agents refuse unknown spec fields: a spec that sets nothing new stores nothing new."""
    plain = ServiceSpec.from_dict({"image": "x"}, name=WEB)
    assert "proxy" not in plain.to_dict() and "pause_limit" not in plain.to_dict()
    tuned = ServiceSpec.from_dict({"image": "x", "proxy": {"read_timeout": "2s"}, "pause_limit": "5m"}, name=WEB)
    assert tuned.to_dict()["proxy"]["read_timeout"] == "2s" and tuned.to_dict()["pause_limit"] == "300s"
    assert tuned.runtime_hash == plain.runtime_hash  # routing and pause policy never replace containers
    assert ServiceSpec.from_dict(tuned.to_dict(), name=WEB) == tuned
    assert ProxyPolicy().route_options() == ()
    assert ProxyPolicy(connect_timeout=1, read_timeout=2).route_options() == ("connect=1", "read=2")
