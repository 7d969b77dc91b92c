"""Table tests for what the agent posts to nginx about HTTPS, the default certificate and what is
served from the TLS state (pure)."""

from __future__ import annotations

import time

import pytest
from cryptography import x509

from daprdockr.core.mirror import WatchEvent
from daprdockr.core.nginx_tls import acme_update, certs_update, good_host, refused_certs, served_pem
from daprdockr.core.tls import CertRecord
from daprdockr.core.tls_keys import TlsSchema
from daprdockr.core.tls_selfsigned import RENEW_BEFORE, self_signed, still_good
from daprdockr.core.tls_serving import served_certs
from daprdockr.core.tls_state import apply_event, decode_tls
from tests.support.tlsgen import issue


@pytest.mark.parametrize(("old", "new", "body"), [
    (None, {}, b"full 7\n"),
    (None, {"a.example.com": "PEM\n"}, b"full 7\nset a.example.com 4\nPEM\n\n"),
    ({"a.example.com": "PEM\n"}, {"a.example.com": "PEM\n"}, b""),
    ({"a.example.com": "PEM\n"}, {"a.example.com": "NEW\n", "*.example.com": "W"},
     b"set *.example.com 1\nW\nset a.example.com 4\nNEW\n\n"),
    ({"a.example.com": "PEM\n", "b.example.com": "B"}, {"b.example.com": "B"}, b"del a.example.com\n"),
    (None, {"bad host": "x", "a\nset evil": "x", "ok.example.com": "é"}, "full 7\nset ok.example.com 2\né\n".encode()),
])
def test_certs_update(old: dict[str, str] | None, new: dict[str, str], body: bytes) -> None:
    assert certs_update(old, new, generation=7) == body


@pytest.mark.parametrize(("old", "new", "body"), [
    (None, {}, b"full 3\n"),
    ({}, {"tok": "tok.th"}, b"set tok tok.th\n"),
    ({"tok": "tok.th"}, {"tok": "tok.th"}, b""),
    ({"tok": "tok.th"}, {}, b"del tok\n"),
    ({}, {"to k": "x", "tok": "x y", "t2": "t2.a"}, b"set t2 t2.a\n"),
])
def test_acme_update(old: dict[str, str] | None, new: dict[str, str], body: bytes) -> None:
    assert acme_update(old, new, generation=3) == body


@pytest.mark.parametrize(("host", "good"), [
    ("a.example.com", True), ("*.example.com", True), ("x", True), ("A.example.com", False), ("a b", False),
    ("*", False), ("a.*.com", False), ("", False), ("a\n", False),
])
def test_good_host(host: str, good: bool) -> None:
    assert good_host(host) is good


def test_refused_certs_and_served_pem() -> None:
    assert refused_certs("ok 2\nbad a.example.com certificate: PEM_read failed\n") == {
        "a.example.com": "certificate: PEM_read failed"}
    assert refused_certs("ok 1\n") == {}
    assert served_pem("C\n\n", "K") == "C\nK\n"


def test_the_default_certificate() -> None:
    now = time.time()
    cert_pem, key_pem = self_signed(node="n1", now=now)
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    assert "daprdockr default certificate n1" in cert.subject.rfc4514_string()
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["n1.daprdockr.invalid"]
    assert "PRIVATE KEY" in key_pem
    assert still_good(cert_pem.encode(), now=now)
    assert not still_good(cert_pem.encode(), now=cert.not_valid_after_utc.timestamp() - RENEW_BEFORE + 1)
    assert not still_good(b"garbage", now=now)


def test_served_certs_keep_a_host_whose_value_turned_malformed() -> None:
    schema = TlsSchema("/dd")
    leaf = issue(["a.example.com"])
    rec = CertRecord.make(host="a.example.com", cert_pem=leaf.cert_pem, key_pem=leaf.key_pem, source="manual",
                          now=time.time())
    state = decode_tls(schema, [])
    state = apply_event(state, schema, WatchEvent(kind="put", key=schema.cert("a.example.com"), value=rec.encode(),
                                                  revision=2))
    served = served_certs(state, schema, previous={})
    assert served == {"a.example.com": served_pem(leaf.cert_pem, leaf.key_pem)}
    bad = apply_event(state, schema, WatchEvent(kind="put", key=schema.cert("a.example.com"), value=b"{}", revision=3))
    assert bad.bad and served_certs(bad, schema, previous=served) == served  # kept
    assert served_certs(bad, schema, previous={}) == {}  # (never served: nothing to keep)
    gone = apply_event(bad, schema, WatchEvent(kind="delete", key=schema.cert("a.example.com"), revision=4))
    assert served_certs(gone, schema, previous=served) == {}  # deleted: gone
