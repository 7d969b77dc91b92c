"""The seed-compatible daprdockrcmd/daprdockrd flag interfaces, as real processes on real etcd."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_cli import IMG, run_bin

pytestmark = pytest.mark.etcd


@pytest.mark.parametrize(
    "flags",
    [
        ["-svc", "web.myapp", "-set", "-image", IMG, "-instances", "3"],
        ["-svc=web.myapp", "-set=true", "-image=" + IMG, "-instances=3"],
        ["--svc", "web.myapp", "--set", "--image", IMG, "--instances", "3"],
    ],
    ids=["-flag value", "-flag=value", "--flag"],
)
def test_set_forms(etcd_endpoints: str, prefix: str, flags: list[str]) -> None:
    r = run_bin("daprdockrcmd", *flags, "-cmd", "httpd -f -p '8080'", "-http-host", "web.example.com",
                "-http-port", "8080", f"-etcd={etcd_endpoints}", "-prefix", prefix, etcd="", prefix="")
    assert r.returncode == 0, r.stderr
    got = run_bin("daprdockrcmd", "-svc", "web.myapp", "-get", "-etcd", etcd_endpoints, "-prefix", prefix,
                  etcd="", prefix="")
    spec = json.loads(got.stdout)
    assert spec["instances"] == 3 and spec["cmd"] == ["httpd", "-f", "-p", "8080"]
    assert spec["http_host"] == "web.example.com" and spec["http_port"] == 8080


def test_stdin_del_and_verbose(etcd_endpoints: str, prefix: str) -> None:
    common = [f"-etcd={etcd_endpoints}", "-prefix", prefix]
    doc = json.dumps({"image": IMG, "instances": 2, "env": {"A": "b"}})
    r = run_bin("daprdockrcmd", "-svc", "api.myapp", "-set", "-stdin", "-v", *common, etcd="", prefix="", stdin=doc)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stderr.strip().splitlines()[-1])["env"] == {"A": "b"}  # -v echoes the spec
    assert run_bin("daprdockrcmd", "-svc", "api.myapp", "-del", *common, etcd="", prefix="").returncode == 0
    again = run_bin("daprdockrcmd", "-svc", "api.myapp", "-get", *common, etcd="", prefix="")
    assert again.returncode == 3 and "not found" in again.stderr


@pytest.mark.parametrize(
    ("flags", "code"),
    [
        (["-svc", "web.myapp"], 2),  # no action
        (["-svc", "web.myapp", "-set", "-get"], 2),
        (["-svc", "Web.myapp", "-get"], 2),
        (["-svc", "web.myapp", "-set", "-image", IMG, "-http-host", "x;y", "-http-port", "1"], 2),
        (["-svc", "web.myapp", "-bogus"], 2),
        (["-svc", "web.myapp", "-set=maybe"], 2),
    ],
)
def test_errors(etcd_endpoints: str, prefix: str, flags: list[str], code: int) -> None:
    r = run_bin("daprdockrcmd", *flags, f"-etcd={etcd_endpoints}", "-prefix", prefix, etcd="", prefix="")
    assert r.returncode == code and r.stderr.startswith("daprdockr: ")


def test_default_etcd_is_the_seed_cluster(prefix: str) -> None:
    r = run_bin("daprdockrcmd", "-svc", "web.myapp", "-get", "-prefix", prefix, etcd="", prefix="")
    # nothing listens on the seed's ports in this test: the error must name all three endpoints
    if r.returncode == 4:
        for port in ("5001", "5002", "5003"):
            assert f"localhost:{port}" in r.stderr
    else:
        assert r.returncode in (0, 3)  # a seed-port cluster (make cluster) happens to be running


def test_daprdockrd_rejects_bad_flags_clearly() -> None:
    r = run_bin("daprdockrd", "-node-id", "Bad_Node", "-etcd", "http://127.0.0.1:1", etcd="", prefix="")
    assert r.returncode == 2 and "node" in r.stderr
