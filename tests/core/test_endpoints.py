"""Table tests for etcd endpoint parsing and the TLS/auth consistency check (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from daprdockr.core.endpoints import EtcdSecurity, check_security, parse_endpoints
from daprdockr.errors import ValidationError


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("http://a:1,b:2", ["http://a:1", "http://b:2"]),
        ("https://etcd.example:2379", ["https://etcd.example:2379"]),
        ("10.0.0.1", ["http://10.0.0.1:2379"]),
    ],
)
def test_parse(text: str, want: list[str]) -> None:
    assert [str(e) for e in parse_endpoints(text)] == want


@pytest.mark.parametrize("text", ["ftp://a:1", "http://u:pw@a:1", "http://a:1/path", ",", "http://a:x"])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_endpoints(text)


def test_tls_files_for_plain_http_endpoints_are_refused_not_ignored() -> None:
    """Regression: --etcd-cacert with http:// endpoints was silently unused (the connection stayed
    in clear text while the operator believed it verified)."""
    with pytest.raises(ValidationError, match="every endpoint is http://"):
        check_security(parse_endpoints("http://10.0.0.1:2379"), EtcdSecurity(cacert=Path("/ca.pem")))
    assert check_security(parse_endpoints("https://10.0.0.1:2379"), EtcdSecurity(cacert=Path("/ca.pem"))) == []


def test_a_password_over_plain_http_beyond_loopback_is_reported() -> None:
    user = EtcdSecurity(user="dd", password="pw")
    assert check_security(parse_endpoints("http://127.0.0.1:2379,http://localhost:2379"), user) == []
    assert check_security(parse_endpoints("http://10.0.0.1:2379,https://10.0.0.2:2379"), user) == [
        "http://10.0.0.1:2379"]
