"""``svc set --https/--hsts`` against a real etcd: merged onto the spec, refused with one line
when bad, and ``--https off`` drops the HSTS header too."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.etcd
IMG = "busybox:latest"


def test_https_policy_flags(cli) -> None:  # type: ignore[no-untyped-def]
    base = ("svc", "set", "web.myapp", "--image", IMG, "--http-host", "web.example.com", "--http-port", "80")
    assert cli(*base).exit_code == 0
    r = cli("svc", "set", "web.myapp", "--https", "redirect", "--hsts", "600", "--json")
    assert r.exit_code == 0, r.output
    spec = json.loads(cli("svc", "get", "web.myapp").output)
    assert (spec["https"], spec["hsts"], spec["http_host"]) == ("redirect", 600, "web.example.com")
    bad = cli("svc", "set", "web.myapp", "--https", "sometimes")
    assert bad.exit_code == 2 and "https" in bad.output and "redirect" in bad.output
    assert json.loads(cli("svc", "get", "web.myapp").output)["https"] == "redirect"  # nothing written
    assert cli("svc", "set", "web.myapp", "--https", "off").exit_code == 0
    spec = json.loads(cli("svc", "get", "web.myapp").output)
    assert "https" not in spec and "hsts" not in spec  # the default is not stored
    no_host = cli("svc", "set", "api.myapp", "--image", IMG, "--https", "on")
    assert no_host.exit_code == 2 and "http_host" in no_host.output
