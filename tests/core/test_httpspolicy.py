"""Table tests for a service's HTTPS policy (pure): parsing, what is stored, what nginx is told."""

from __future__ import annotations

import pytest

from daprdockr.core.httpspolicy import HttpsPolicy
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.routing import routing_table
from daprdockr.core.state import ClusterState
from daprdockr.errors import ValidationError

WEB = ServiceName(group="myapp", service="web")


@pytest.mark.parametrize(("https", "hsts", "expected", "options"), [
    (None, None, HttpsPolicy(), ()),
    ("off", 0, HttpsPolicy(), ()),
    ("on", None, HttpsPolicy(mode="on"), ("tls=on",)),
    ("redirect", 31536000, HttpsPolicy(mode="redirect", hsts=31536000), ("tls=redirect", "hsts=31536000")),
    ("only", 60, HttpsPolicy(mode="only", hsts=60), ("tls=only", "hsts=60")),
])
def test_good_policies(https: object, hsts: object, expected: HttpsPolicy, options: tuple[str, ...]) -> None:
    policy = HttpsPolicy.parse(https, hsts)
    assert policy == expected
    assert policy.route_options() == options
    stored = policy.to_dict()
    assert HttpsPolicy.parse(stored.get("https"), stored.get("hsts")) == policy


@pytest.mark.parametrize(("https", "hsts", "field"), [
    ("yes", None, "https"),
    (True, None, "https"),
    ("on", -1, "hsts"),
    ("on", "1y", "hsts"),
    ("on", True, "hsts"),
    ("on", 10**9, "hsts"),
    ("off", 3600, "hsts"),
    (None, 3600, "hsts"),
])
def test_bad_policies_name_their_field(https: object, hsts: object, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        HttpsPolicy.parse(https, hsts)
    assert err.value.field == field


def test_the_default_is_not_stored_and_a_policy_round_trips() -> None:
    plain = ServiceSpec.from_dict({"image": "x", "http_host": "web.example.com", "http_port": 80}, name=WEB)
    assert "https" not in plain.to_dict() and "hsts" not in plain.to_dict()
    tls = ServiceSpec.from_dict({**plain.to_dict(), "https": "redirect", "hsts": 600}, name=WEB)
    assert tls.to_dict()["https"] == "redirect" and tls.to_dict()["hsts"] == 600
    assert ServiceSpec.from_dict(tls.to_dict(), name=WEB) == tls
    assert tls.runtime_hash == plain.runtime_hash  # the policy never replaces containers


def test_https_needs_a_host() -> None:
    with pytest.raises(ValidationError) as err:
        ServiceSpec.from_dict({"image": "x", "https": "on"}, name=WEB)
    assert err.value.field == "https"


def test_the_routing_table_carries_the_policy_to_nginx() -> None:
    spec = ServiceSpec.from_dict({"image": "x", "http_host": "web.example.com", "http_port": 80,
                                  "https": "only", "hsts": 60, "proxy": {"balancer": "round-robin"}}, name=WEB)
    table = routing_table(ClusterState(services={WEB: spec}))
    assert table == {"web.example.com": ("lb=round-robin", "tls=only", "hsts=60")}
