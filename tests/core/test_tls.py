"""core/tls.py: pairs checked before they are stored, names covered, SNI lookup, records, with
certificates made in the test (tests/support/tlsgen.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from daprdockr.core.jsondata import MAX_RECORD_BYTES
from daprdockr.core.tls import CertRecord, check_pair, covers, lookup, validate_cert_host
from daprdockr.errors import ValidationError
from tests.support.tlsgen import DAY, Issued, issue, key_pem, make_ca, new_key

NOW = time.time()
CA = make_ca()
INTER = issue([], cn="Intermediate", ca=CA, is_ca=True)
LEAF = issue(["a.example.com", "www.example.com"], ca=INTER, key=new_key("rsa"))
WILD = issue(["*.example.com"], ca=CA)
OTHER = issue(["a.example.com"], ca=CA)


@pytest.mark.parametrize(("pattern", "host", "expected"), [
    ("a.example.com", "a.example.com", True),
    ("A.Example.COM", "a.example.com", True),
    ("a.example.com", "A.EXAMPLE.com.", True),
    ("a.example.com", "b.example.com", False),
    ("*.example.com", "a.example.com", True),
    ("*.example.com", "A.Example.Com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "a.b.example.com", False),
    ("*.example.com", ".example.com", False),
    ("*.example.com", "*.example.com", True),
    ("a.example.com", "*.example.com", False),
    ("*.b.example.com", "a.b.example.com", True),
    ("*.b.example.com", "a.example.com", False),
    ("*.example.com", "a.example.org", False),
    ("example.com", "a.example.com", False),
])
def test_covers(pattern: str, host: str, expected: bool) -> None:
    assert covers(pattern, host) is expected


@pytest.mark.parametrize(("hosts", "sni", "expected"), [
    ({"a.example.com"}, "a.example.com", "a.example.com"),
    ({"a.example.com"}, "A.EXAMPLE.COM", "a.example.com"),
    ({"a.example.com"}, "a.example.com.", "a.example.com"),
    ({"a.example.com", "*.example.com"}, "a.example.com", "a.example.com"),  # exact first
    ({"*.example.com"}, "b.example.com", "*.example.com"),
    ({"*.example.com"}, "example.com", None),
    ({"*.example.com"}, "a.b.example.com", None),
    ({"*.b.example.com", "*.example.com"}, "a.b.example.com", "*.b.example.com"),
    ({"a.example.com"}, "unknown.org", None),
    ({"a.example.com"}, "", None),
    ({"localhost"}, "localhost", "localhost"),
    (set(), "a.example.com", None),
])
def test_lookup(hosts: set[str], sni: str, expected: str | None) -> None:
    assert lookup(hosts, sni) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("A.Example.com", "a.example.com"), ("*.Example.com", "*.example.com"), ("localhost", "localhost"),
])
def test_cert_host_valid(text: str, expected: str) -> None:
    assert validate_cert_host(text) == expected


@pytest.mark.parametrize("text", ["*.com", "*", "a.*.example.com", "*a.example.com", "**.example.com", "",
                                  "a b.com", "a;b.com", "a/b.com", "-a.com", "1.2.3.4"])
def test_cert_host_invalid(text: str) -> None:
    with pytest.raises(ValidationError):
        validate_cert_host(text)


def _pair(issued: Issued, *issuers: Issued) -> tuple[str, str]:
    return issued.chain_pem(*issuers), issued.key_pem


def _expired() -> tuple[str, str]:
    return _pair(issue(["a.example.com"], ca=CA, not_before=NOW - 10 * DAY, not_after=NOW - DAY))


def _future() -> tuple[str, str]:
    return _pair(issue(["a.example.com"], ca=CA, not_before=NOW + DAY, not_after=NOW + 10 * DAY))


BAD: list[tuple[str, str, Callable[[], tuple[str, str]], str]] = [
    ("key does not match", "a.example.com", lambda: (LEAF.chain_pem(INTER), OTHER.key_pem),
     "key: the private key does not match the certificate"),
    ("expired", "a.example.com", _expired, "cert: certificate expired on "),
    ("not yet valid", "a.example.com", _future, "cert: certificate is not valid yet: from "),
    ("garbage cert", "a.example.com", lambda: ("hello world\n", OTHER.key_pem),
     "cert: not a PEM certificate (no '-----BEGIN CERTIFICATE-----' line)"),
    ("garbage inside PEM", "a.example.com",
     lambda: ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", OTHER.key_pem),
     "cert: certificate PEM does not parse"),
    ("garbage key", "a.example.com", lambda: (OTHER.cert_pem, "nope"),
     "key: not a PEM private key"),
    ("garbage inside key", "a.example.com",
     lambda: (OTHER.cert_pem, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
     "key: private key PEM does not parse"),
    ("key and cert swapped", "a.example.com", lambda: (OTHER.key_pem, OTHER.cert_pem),
     "cert: not a PEM certificate"),
    ("encrypted key", "a.example.com", lambda: (OTHER.cert_pem, key_pem(OTHER.key, password=b"secret")),
     "key: private key is encrypted: give it without a passphrase"),
    ("1 MiB certificate", "a.example.com",
     lambda: (OTHER.cert_pem + "A" * (1 << 20), OTHER.key_pem),
     f"cert: certificate chain is {len(OTHER.cert_pem) + (1 << 20)} bytes, at most 49152 allowed"),
    ("1 MiB key", "a.example.com", lambda: (OTHER.cert_pem, "A" * (1 << 20)),
     "key: private key is 1048576 bytes, at most 8192 allowed"),
    ("name does not cover host", "b.example.com", lambda: _pair(OTHER),
     "cert: certificate names a.example.com; none covers b.example.com"),
    ("wildcard does not cover the apex", "example.com", lambda: _pair(WILD),
     "cert: certificate names *.example.com; none covers example.com"),
    ("wildcard does not cover two labels", "a.b.example.com", lambda: _pair(WILD),
     "cert: certificate names *.example.com; none covers a.b.example.com"),
    ("a name does not cover the wildcard host", "*.example.com", lambda: _pair(OTHER),
     "cert: certificate names a.example.com; none covers *.example.com"),
    ("chain out of order", "a.example.com", lambda: (LEAF.cert_pem + CA.cert_pem + INTER.cert_pem, LEAF.key_pem),
     "cert: chain out of order: 'CN=a.example.com' is not signed by the next certificate, 'CN=Test CA'"),
    ("chain of unrelated certificates", "a.example.com", lambda: (OTHER.cert_pem + WILD.cert_pem, OTHER.key_pem),
     "cert: chain out of order"),
    ("RSA key too small", "a.example.com",
     lambda: _pair(issue(["a.example.com"], ca=CA, key=new_key("rsa1024"))),
     "key: RSA key of 1024 bits, at least 2048 required"),
]


@pytest.mark.parametrize(("host", "make", "message"), [row[1:] for row in BAD], ids=[row[0] for row in BAD])
def test_check_pair_refuses(host: str, make: Callable[[], tuple[str, str]], message: str) -> None:
    cert_pem, key = make()
    with pytest.raises(ValidationError) as err:
        check_pair(host=host, cert_pem=cert_pem, key_pem=key, now=NOW)
    assert str(err.value).startswith(message), str(err.value)


GOOD: list[tuple[str, str, Callable[[], tuple[str, str]], tuple[str, ...]]] = [
    ("leaf with intermediate", "a.example.com", lambda: _pair(LEAF, INTER), ("a.example.com", "www.example.com")),
    ("second name", "www.example.com", lambda: _pair(LEAF, INTER, CA), ("a.example.com", "www.example.com")),
    ("leaf alone", "a.example.com", lambda: _pair(OTHER), ("a.example.com",)),
    ("wildcard cert for a host", "x.example.com", lambda: _pair(WILD), ("*.example.com",)),
    ("wildcard cert for the wildcard", "*.example.com", lambda: _pair(WILD), ("*.example.com",)),
    ("upper-case SAN", "a.example.com", lambda: _pair(issue(["A.EXAMPLE.COM"], ca=CA)), ("a.example.com",)),
    ("CN when no SAN", "legacy.example.com", lambda: _pair(issue(["legacy.example.com"], san=False)),
     ("legacy.example.com",)),
    ("self-signed", "self.example.com", lambda: _pair(issue(["self.example.com"])), ("self.example.com",)),
]


@pytest.mark.parametrize(("host", "make", "names"), [row[1:] for row in GOOD], ids=[row[0] for row in GOOD])
def test_check_pair_accepts(host: str, make: Callable[[], tuple[str, str]], names: tuple[str, ...]) -> None:
    cert_pem, key = make()
    info = check_pair(host=host, cert_pem=cert_pem, key_pem=key, now=NOW)
    leaf = cert_pem.split("-----END CERTIFICATE-----")[0]
    assert info.names == names
    assert info.not_before < NOW < info.not_after
    assert len(info.fingerprint) == 64 and int(info.serial, 16) > 0
    assert info.issuer.startswith("CN=") and leaf


def test_info_says_what_the_leaf_says() -> None:
    info = check_pair(host="a.example.com", cert_pem=LEAF.chain_pem(INTER), key_pem=LEAF.key_pem, now=NOW)
    assert info.serial == format(LEAF.cert.serial_number, "x")
    assert info.issuer == "CN=Intermediate"
    assert info.not_after == LEAF.cert.not_valid_after_utc.timestamp()
    import hashlib

    from cryptography.hazmat.primitives.serialization import Encoding
    assert info.fingerprint == hashlib.sha256(LEAF.cert.public_bytes(Encoding.DER)).hexdigest()


def test_record_round_trip_and_expired_still_loads() -> None:
    rec = CertRecord.make(host="A.Example.com", cert_pem=LEAF.chain_pem(INTER), key_pem=LEAF.key_pem,
                          source="manual", now=NOW)
    assert rec.host == "a.example.com" and rec.set_at == NOW
    assert CertRecord.from_dict(rec.to_dict(), host="a.example.com") == rec
    assert len(rec.encode()) < MAX_RECORD_BYTES
    # a stored certificate that expired since still loads (served until replaced) unless `now` is given
    cert_pem, key = _expired()
    stored = {**rec.to_dict(), "cert": cert_pem, "key": key, "source": "acme"}
    old = CertRecord.from_dict(stored)
    assert old.source == "acme" and old.info.not_after < NOW
    with pytest.raises(ValidationError, match="expired"):
        CertRecord.from_dict(stored, now=NOW)


@pytest.mark.parametrize(("change", "message"), [
    ({"host": "b.example.com"}, "host: record names 'b.example.com', its key 'a.example.com'"),
    ({"source": "stolen"}, "source: 'stolen' is not manual or acme"),
    ({"set_at": "yesterday"}, "set_at: must be a number"),
    ({"cert": None}, "cert: cert and key must be PEM strings"),
    ({"key": OTHER.key_pem}, "key: the private key does not match"),
    ({"fingerprint": "forged"}, None),  # stored info is recomputed, never trusted
    ({"future_field": 1}, None),  # fields of newer writers are ignored
])
def test_record_from_dict_checks(change: dict[str, object], message: str | None) -> None:
    rec = CertRecord.make(host="a.example.com", cert_pem=LEAF.chain_pem(INTER), key_pem=LEAF.key_pem,
                          source="manual", now=NOW)
    data = {**rec.to_dict(), **change}
    if message is None:
        assert CertRecord.from_dict(data, host="a.example.com") == rec
        return
    with pytest.raises(ValidationError) as err:
        CertRecord.from_dict(data, host="a.example.com")
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_traditional_openssl_key_formats_accepted(kind: str) -> None:
    from cryptography.hazmat.primitives import serialization

    pair = issue(["a.example.com"], ca=CA, key=new_key(kind))
    traditional = pair.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                         serialization.NoEncryption()).decode()
    assert traditional.startswith("-----BEGIN RSA PRIVATE KEY" if kind == "rsa" else "-----BEGIN EC PRIVATE KEY")
    assert check_pair(host="a.example.com", cert_pem=pair.cert_pem, key_pem=traditional, now=NOW).names == (
        "a.example.com",)
