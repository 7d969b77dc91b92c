"""The CLI kit's pure helpers: spec files, flag merging, safe text, etcd options, agent config."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from rich.console import Console

from daprdockr.adapters.hollow_runtime import HollowOptions
from daprdockr.clikit.agentconfig import build_agent_config, parse_addr, parse_networks
from daprdockr.clikit.etcdopts import etcd_security
from daprdockr.clikit.output import _plain_table, make_table, safe_text
from daprdockr.clikit.specfile import merge_flags, merge_onto, parse_pairs, parse_spec_text
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.errors import ValidationError

WEB = ServiceName(group="myapp", service="web")


def test_spec_text_json_yaml_and_errors_with_lines() -> None:
    assert parse_spec_text('{"image": "x"}', source="a.json") == [{"image": "x"}]
    assert parse_spec_text("image: x\n---\nimage: y\n", source="a.yaml") == [{"image": "x"}, {"image": "y"}]
    with pytest.raises(ValidationError, match=r"a.json: invalid JSON at line 2"):
        parse_spec_text('{"image":\n ', source="a.json")
    with pytest.raises(ValidationError, match=r"a\.yaml: invalid YAML at line 2"):
        parse_spec_text("image: x\n  bad: [\n", source="a.yaml")
    with pytest.raises(ValidationError, match="empty spec"):
        parse_spec_text("  ", source="x")


def test_merge_keeps_what_was_not_given_and_merges_env_by_key() -> None:
    base = {"image": "x", "instances": 2, "env": {"A": "1"}}
    assert merge_flags(base, {"instances": 5, "image": None, "env": {"B": "2"}}) == {
        "image": "x", "instances": 5, "env": {"A": "1", "B": "2"}}
    assert parse_pairs(["A=1", "B=x=y"], field="env") == {"A": "1", "B": "x=y"}
    with pytest.raises(ValidationError, match="KEY=VALUE"):
        parse_pairs(["novalue"], field="env")


def test_merge_onto_an_invalid_stored_spec_says_why() -> None:
    with pytest.raises(ValidationError, match=r"the stored spec of web\.myapp is invalid: truncated"):
        merge_onto(WEB, None, "truncated", {"instances": 3})
    spec = merge_onto(WEB, None, "truncated", {"image": "busybox", "instances": 3})
    assert spec == ServiceSpec(name=WEB, image="busybox", instances=3)


@pytest.mark.parametrize(("text", "shown"), [
    ("a\x1b[2Jb", "a\\x1b[2Jb"), ("x\ny", "x\\ny"), ("tab\there", "tab\\there"),
    ("plain [red]x[/red]", "plain [red]x[/red]"), ("\x9b31m", "\\x9b31m"),
    # invisible characters that reorder or hide text: a bidi override, a zero-width space, an isolate
    ("ok\u202etxt.exe", "ok\\u202etxt.exe"), ("a\u200bb", "a\\u200bb"), ("\u2066x\u2069", "\\u2066x\\u2069"),
    ("café ünïcode", "café ünïcode")])
def test_safe_text_escapes_control_characters(text: str, shown: str) -> None:
    assert safe_text(text) == shown


def test_etcd_options_from_flags_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert etcd_security() is None
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    sec = etcd_security(user="dd", password_file=pw)
    assert sec is not None and sec.user == "dd" and sec.password == "secret" and "secret" not in repr(sec)
    monkeypatch.setenv("DAPRDOCKR_ETCD_USER", "env-user")
    monkeypatch.setenv("DAPRDOCKR_ETCD_PASSWORD", "from-env")
    sec = etcd_security()
    assert sec is not None and (sec.user, sec.password) == ("env-user", "from-env")
    with pytest.raises(ValidationError, match="no such file"):
        etcd_security(cacert=tmp_path / "absent.pem")
    monkeypatch.delenv("DAPRDOCKR_ETCD_PASSWORD")
    with pytest.raises(ValidationError, match="needs a password"):
        etcd_security()


def test_agent_config_validation(tmp_path: Path) -> None:
    assert parse_addr("off", field="f", default_port=1) is None
    assert parse_addr("127.0.0.1", field="f", default_port=53) == ("127.0.0.1", 53)
    assert [str(n) for n in parse_networks("10.0.0.0/8, 172.17.0.1/16", field="f")] == ["10.0.0.0/8",
                                                                                         "172.17.0.0/16"]
    with pytest.raises(ValidationError, match="--dns-allow"):
        parse_networks("10.0.0.0/33", field="--dns-allow")
    base = dict(etcd="http://127.0.0.1:2379", prefix="/dd", node_id="n1", advertise_ip="127.0.0.11", ttl=5,
                capacity=0, docker=None, state_dir=tmp_path, dns_listen="off", dns_upstream=None, dns_ttl=5,
                http_listen="off", nginx="nginx", api_listen="off", keep_on_exit=False)
    assert build_agent_config(**base).node_id == "n1"  # type: ignore[arg-type]
    for key, value, flag in [("ttl", 0, "--ttl"), ("dns_workers", 99, "--dns-workers"), ("node_id", "N_1", "--node-id"),
                             ("advertise_ip", "0.0.0.0", "--advertise-ip"), ("dns_listen", "x:99999", "--dns-listen")]:
        with pytest.raises(ValidationError, match=flag):
            build_agent_config(**{**base, key: value})  # type: ignore[arg-type]

    assert build_agent_config(**base).runtime == "docker"  # type: ignore[arg-type]
    # --https-listen: auto by default (decided at start, only with an HTTP listener), off, or an address
    web = {**base, "http_listen": "127.0.0.11:80"}
    auto = build_agent_config(**web)  # type: ignore[arg-type]
    assert (auto.https_listen, auto.https_auto) == (None, True)
    assert build_agent_config(**base).https_auto is False  # type: ignore[arg-type]  # (no nginx at all)
    off = build_agent_config(**{**web, "https_listen": "off"})  # type: ignore[arg-type]
    assert (off.https_listen, off.https_auto) == (None, False)
    given = build_agent_config(**{**web, "https_listen": "127.0.0.11:8443"})  # type: ignore[arg-type]
    assert (given.https_listen, given.https_auto) == (("127.0.0.11", 8443), False)
    hollow = build_agent_config(**{**base, "runtime": "hollow", "hollow_start_delay": 0.5,  # type: ignore[arg-type]
                                   "hollow_failure_rate": 0.1, "hollow_seed": 3})
    assert hollow.runtime == "hollow" and hollow.hollow == HollowOptions(start_delay=0.5, failure_rate=0.1, seed=3)
    for key, value, flag in [("runtime", "podman", "--runtime"), ("hollow_failure_rate", 1.5, "--hollow-failure-rate"),
                             ("hollow_start_delay", -1.0, "--hollow-start-delay")]:
        with pytest.raises(ValidationError, match=flag):
            build_agent_config(**{**base, key: value})  # type: ignore[arg-type]


def test_agent_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--docker-config: empty is $DOCKER_CONFIG/config.json (else ~/.docker/config.json), none: no credentials."""
    base = dict(etcd="http://127.0.0.1:2379", prefix="/dd", node_id="n1", advertise_ip="127.0.0.11", ttl=5,
                capacity=0, docker=None, state_dir=tmp_path, dns_listen="off", dns_upstream=None, dns_ttl=5,
                http_listen="off", nginx="nginx", api_listen="off", keep_on_exit=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    assert build_agent_config(**base).docker_config == tmp_path / "dc" / "config.json"  # type: ignore[arg-type]
    monkeypatch.delenv("DOCKER_CONFIG")
    assert build_agent_config(**base).docker_config == Path.home() / ".docker/config.json"  # type: ignore[arg-type]
    for text, path in [("none", None), ("off", None), ("/etc/docker-auth.json", Path("/etc/docker-auth.json"))]:
        assert build_agent_config(**base, docker_config=text).docker_config == path  # type: ignore[arg-type]


def test_plain_tables_print_what_rich_prints() -> None:
    """Not on a terminal, a simple table is printed without rich, the same text to the byte."""
    rnd = random.Random(7)
    values: list[object] = ["", "x", "abc", "a b", "x  y", "-", None, True, False, 0, 12, 3.5, {},
                            {"80/tcp": 1, "53/udp": 2}, "\u00e9", "\u4e2d\u6587", " lead", "trail ", "a\x1bb", "a" * 60,
                            "registry.example.com/team/a:1.0"]
    plain = 0
    for _ in range(2000):
        columns = rnd.sample(["node", "state", "address", "http_host", "a", "b_c", "instances"], rnd.randint(1, 5))
        rows = [{c: rnd.choice(values) for c in columns} for _ in range(rnd.randint(0, 6))]
        title = rnd.choice([None, None, "nodes", "services", "a much longer title than usual", "x", "ab"])
        width = rnd.choice([200, 40, 20])
        shown = io.StringIO()
        Console(file=shown, width=width).print(make_table(rows, columns, title=title))
        got = _plain_table(rows, columns, title=title, width=width)
        if got is not None:  # (None: rich lays it out; wide characters, edges, wrapping)
            plain += 1
            assert got == shown.getvalue(), (rows, columns, title, width)
    assert plain > 400


@pytest.mark.parametrize(("flags", "error"), [
    ({"acme_email": "ops@example.com"}, "--acme-directory"),  # needs a directory
    ({"acme_ca_file": "/etc/hosts"}, "--acme-directory"),
    ({"acme_directory": "ftp://ca.example/dir"}, "--acme-directory"),
    ({"acme_directory": "https:///dir"}, "--acme-directory"),
    ({"acme_directory": "https://ca.example/dir", "acme_email": "not an address"}, "--acme-email"),
    ({"acme_directory": "https://ca.example/dir", "acme_ca_file": "/nonexistent/ca.pem"}, "--acme-ca-file"),
    ({"acme_directory": "https://ca.example/dir", "acme_interval": 0.0}, "--acme-interval"),
])
def test_agent_acme_flags_are_checked(tmp_path: Path, flags: dict[str, object], error: str) -> None:
    base = dict(etcd="http://127.0.0.1:2379", prefix="/dd", node_id="n1", advertise_ip="127.0.0.11", ttl=5,
                capacity=0, docker=None, state_dir=tmp_path, dns_listen="off", dns_upstream=None, dns_ttl=5,
                http_listen="off", nginx="nginx", api_listen="off", keep_on_exit=False)
    assert build_agent_config(**base).acme is None  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=error):
        build_agent_config(**{**base, **flags})  # type: ignore[arg-type]
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    acme = build_agent_config(**{**base, "acme_directory": "https://ca.example/dir",  # type: ignore[arg-type]
                                 "acme_email": "ops@example.com", "acme_ca_file": str(ca), "acme_interval": 2.0}).acme
    assert acme is not None and (acme.directory, acme.email, acme.ca_file, acme.interval) == (
        "https://ca.example/dir", "ops@example.com", str(ca), 2.0)
