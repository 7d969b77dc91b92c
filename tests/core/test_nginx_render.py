"""Golden-file and table tests for the pure nginx config renderer."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from daprdockr.core.model import InstanceRecord, ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.nginx_render import NginxPaths, render_nginx_conf
from daprdockr.core.state import ClusterState
from daprdockr.errors import ValidationError

GOLDEN = Path(__file__).parent / "golden"
WEB = ServiceName(group="myapp", service="web")
API = ServiceName(group="myapp", service="api")
IDLE = ServiceName(group="other", service="idle")
PATHS = NginxPaths(root="/tmp/dd/n1/nginx")


def rec(name: ServiceName, n: int, addr: str, port: int, state: str = "running") -> InstanceRecord:
    return InstanceRecord(service=name, number=n, node="n1", address=addr, state=state,  # type: ignore[arg-type]
                          ports=(("8080/tcp", port),))


SPECS = {
    WEB: ServiceSpec(name=WEB, image="x", instances=3, http_host="web.example.com", http_port=8080),
    API: ServiceSpec(name=API, image="x", instances=1, http_host="api.example.com", http_port=8080),
    IDLE: ServiceSpec(name=IDLE, image="x", instances=0, http_host="idle.example.com", http_port=8080),
    ServiceName(group="x", service="nohttp"): ServiceSpec(name=ServiceName(group="x", service="nohttp"), image="x"),
}
FULL = ClusterState(
    services=SPECS,
    instances={
        (WEB, 1): rec(WEB, 1, "127.0.0.12", 32001),
        (WEB, 2): rec(WEB, 2, "127.0.0.11", 32002),
        (WEB, 3): rec(WEB, 3, "127.0.0.11", 32003, state="starting"),
        (API, 1): rec(API, 1, "::1", 32010),
    },
)

CASES = {
    "empty": (ClusterState(), ("127.0.0.1", 80), None),
    "services": (FULL, ("127.0.0.11", 8080), ("www-data", "www-data")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    state, listen, user = CASES[case]
    text = render_nginx_conf(state, listen=listen, paths=PATHS, worker_user=user).text
    path = GOLDEN / f"nginx_{case}.conf"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_deterministic_regardless_of_dict_order() -> None:
    shuffled = ClusterState(services=dict(reversed(list(SPECS.items()))),
                            instances=dict(reversed(list(FULL.instances.items()))))
    a = render_nginx_conf(FULL, listen=("127.0.0.1", 80), paths=PATHS)
    b = render_nginx_conf(shuffled, listen=("127.0.0.1", 80), paths=PATHS)
    assert a.text == b.text
    assert a.services == b.services == (API, IDLE, WEB)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"http_host": "a.com; include /etc/passwd"}, "http_host"),
        ({"http_host": "a.com}\nserver {"}, "http_host"),
        ({"http_host": "a b"}, "http_host"),
    ],
)
def test_injection_via_host_is_refused(bad: dict[str, str], field: str) -> None:
    spec = replace(SPECS[WEB], **bad)  # bypasses from_dict validation on purpose
    state = replace(FULL, services={WEB: spec})
    out = render_nginx_conf(state, listen=("127.0.0.1", 80), paths=PATHS)
    assert WEB in out.errors and field in out.errors[WEB]
    assert "passwd" not in out.text and "a b" not in out.text


def test_injection_via_address_leaves_only_that_instance_out() -> None:
    state = replace(FULL, services={WEB: SPECS[WEB]},
                    instances={(WEB, 1): rec(WEB, 1, "1.2.3.4:1; evil", 32001),
                               (WEB, 2): rec(WEB, 2, "127.0.0.12", 32002)})
    out = render_nginx_conf(state, listen=("127.0.0.1", 80), paths=PATHS)
    assert "evil" not in out.text and out.services == (WEB,)
    assert "server 127.0.0.12:32002 max_fails=0;" in out.text


def test_upstream_names_are_injective() -> None:
    from daprdockr.core.nginx_render import upstream_name

    names = [ServiceName(group=g, service=s) for g, s in
             [("a-b", "c"), ("a", "b-c"), ("a--b", "c"), ("a", "b--c"), ("ab", "c"), ("a", "bc")]]
    assert len({upstream_name(n) for n in names}) == len(names)


@pytest.mark.parametrize("root", ["relative/path", "/tmp/a b", "/tmp/x;y"])
def test_unsafe_paths_refused(root: str) -> None:
    with pytest.raises(ValidationError):
        NginxPaths(root=root)


def test_skip_and_only_select_services() -> None:
    only = render_nginx_conf(FULL, listen=("127.0.0.1", 80), paths=PATHS, only=frozenset({API}))
    assert only.services == (API,) and "web.example.com" not in only.text
    skipped = render_nginx_conf(FULL, listen=("127.0.0.1", 80), paths=PATHS, skip=frozenset({API}))
    assert API not in skipped.services and "api.example.com" not in skipped.text
