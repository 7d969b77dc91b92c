"""Certificates as DaprDockr keeps them: a PEM chain and its private key checked as a pair before
they are stored (:func:`check_pair`), what a certificate says (:class:`CertInfo`), the record kept
in etcd (:class:`CertRecord`), which names a certificate covers (:func:`covers`) and which stored
certificate a TLS client's SNI selects (:func:`lookup`: the exact name, then the wildcard one label
up).  Pure: parsing with ``cryptography``, no I/O."""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, rsa
from cryptography.x509.oid import NameOID

from daprdockr.core.jsondata import MAX_RECORD_BYTES, dumps, require_mapping
from daprdockr.core.names import validate_hostname
from daprdockr.errors import ValidationError

# The PEM texts' bounds, so a whole record (JSON-escaped: a newline is two bytes) stays under
# MAX_RECORD_BYTES; a real chain of four RSA-4096 certificates is about 8 KiB.
MAX_CHAIN_BYTES = 48 * 1024
MAX_KEY_BYTES = 8 * 1024
MAX_CHAIN_CERTS = 8
MIN_RSA_BITS = 2048

CertSource = Literal["manual", "acme"]
SOURCES: frozenset[str] = frozenset({"manual", "acme"})


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What the leaf certificate of a chain says (``names``: its DNS names, lower-case)."""

    names: tuple[str, ...]
    issuer: str
    serial: str  # hex, lower-case
    fingerprint: str  # SHA-256 of the leaf's DER, hex
    not_before: float  # Unix seconds
    not_after: float

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "issuer": self.issuer, "serial": self.serial,
                "fingerprint": self.fingerprint, "not_before": self.not_before, "not_after": self.not_after}


def validate_cert_host(value: object, *, field: str = "host") -> str:
    """The lower-cased host a certificate is stored for: a hostname, or a wildcard ``*.example.com``
    (one ``*`` as the whole first label, at least two labels after it)."""
    if isinstance(value, str) and value.startswith("*."):
        rest = validate_hostname(value[2:], field=field)
        if "." not in rest:
            raise ValidationError(f"{value!r}: a wildcard needs at least two labels after '*.'", field=field)
        return "*." + rest
    return validate_hostname(value, field=field)


def covers(name_or_pattern: str, host: str) -> bool:
    """Whether a certificate name (``a.example.com`` or ``*.example.com``) covers ``host``
    (case-insensitive).  A wildcard covers exactly one label: ``*.example.com`` covers
    ``a.example.com``, not ``example.com`` nor ``a.b.example.com``; as a host, ``*.example.com``
    is covered only by the same wildcard."""
    name, host = name_or_pattern.lower().rstrip("."), host.lower().rstrip(".")
    if name == host:
        return True
    if not name.startswith("*.") or host.startswith("*."):
        return False
    first, dot, rest = host.partition(".")
    return bool(first and dot) and rest == name[2:]


def lookup(hosts: Collection[str], sni: str) -> str | None:
    """The stored host whose certificate serves ``sni``: ``sni`` itself, else the wildcard one
    label up (``*.example.com`` for ``a.example.com``), else ``None`` (the default certificate)."""
    name = sni.lower().rstrip(".")
    if not name:
        return None
    if name in hosts:
        return name
    _, dot, rest = name.partition(".")
    if dot and rest:
        wildcard = "*." + rest
        if wildcard in hosts:
            return wildcard
    return None


def check_pair(*, host: str, cert_pem: str, key_pem: str, now: float | None) -> CertInfo:
    """Check that ``cert_pem`` (the leaf first, then its intermediates) and ``key_pem`` make a pair
    that may serve ``host``; what the leaf says.  Raises ValidationError naming the first problem:
    too large, garbage PEM, a chain whose certificates do not sign each other in order, a key
    that does not match the leaf, expired or not yet valid at ``now`` (``None``: not checked,
    for stored certificates, which are served until replaced), no name covering ``host``."""
    if len(cert_pem) > MAX_CHAIN_BYTES:
        raise ValidationError(f"certificate chain is {len(cert_pem)} bytes, at most {MAX_CHAIN_BYTES} allowed",
                              field="cert")
    if len(key_pem) > MAX_KEY_BYTES:
        raise ValidationError(f"private key is {len(key_pem)} bytes, at most {MAX_KEY_BYTES} allowed", field="key")
    chain = _load_chain(cert_pem)
    key = _load_key(key_pem)
    leaf = chain[0]
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise ValidationError("the private key does not match the certificate (the first one of the chain)",
                              field="key")
    info = cert_info(leaf)
    if now is not None:
        if now < info.not_before:
            raise ValidationError(f"certificate is not valid yet: from {_iso(info.not_before)}", field="cert")
        if now >= info.not_after:
            raise ValidationError(f"certificate expired on {_iso(info.not_after)}", field="cert")
    if not any(covers(name, host) for name in info.names):
        raise ValidationError(
            f"certificate names {', '.join(info.names) or 'nothing'}; none covers {host}", field="cert")
    return info


def cert_info(leaf: x509.Certificate) -> CertInfo:
    """What a certificate says: its DNS names (the subjectAltName's, else the subject's CN)."""
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n).lower() for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    except ValueError as exc:  # (a malformed extension, parsed lazily)
        raise ValidationError(f"certificate's extensions do not parse: {exc}", field="cert") from None
    if not names:
        names = [str(a.value).lower() for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return CertInfo(
        names=tuple(dict.fromkeys(names)),
        issuer=leaf.issuer.rfc4514_string(),
        serial=format(leaf.serial_number, "x"),
        fingerprint=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
        not_before=leaf.not_valid_before_utc.timestamp(),
        not_after=leaf.not_valid_after_utc.timestamp(),
    )


def _load_chain(cert_pem: str) -> list[x509.Certificate]:
    if "-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise ValidationError("not a PEM certificate (no '-----BEGIN CERTIFICATE-----' line)", field="cert")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem.encode())
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValidationError(f"certificate PEM does not parse: {exc}", field="cert") from None
    if len(chain) > MAX_CHAIN_CERTS:
        raise ValidationError(f"{len(chain)} certificates in the chain, at most {MAX_CHAIN_CERTS}", field="cert")
    for child, parent in itertools.pairwise(chain):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            raise ValidationError(
                f"chain out of order: {child.subject.rfc4514_string()!r} is not signed by the next certificate, "
                f"{parent.subject.rfc4514_string()!r} (give the leaf first, then each issuer)", field="cert") from None
    return chain


def _load_key(key_pem: str) -> Any:
    if "PRIVATE KEY-----" not in key_pem:
        raise ValidationError("not a PEM private key (no '-----BEGIN ... PRIVATE KEY-----' line)", field="key")
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except TypeError:
        raise ValidationError("private key is encrypted: give it without a passphrase", field="key") from None
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError) as exc:
        raise ValidationError(f"private key PEM does not parse: {exc}", field="key") from None
    if isinstance(key, dsa.DSAPrivateKey):
        raise ValidationError("DSA keys are not supported by TLS clients: use RSA or ECDSA", field="key")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        raise ValidationError(f"RSA key of {key.key_size} bits, at least {MIN_RSA_BITS} required", field="key")
    return key


def _spki(public_key: Any) -> bytes:
    return bytes(public_key.public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo))


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class CertRecord:
    """A certificate chain and its key as stored at ``<prefix>-tls/certs/<host>``."""

    host: str
    cert_pem: str
    key_pem: str
    source: CertSource
    info: CertInfo
    set_at: float

    @classmethod
    def make(cls, *, host: str, cert_pem: str, key_pem: str, source: CertSource, now: float) -> CertRecord:
        """A new record, the pair checked at ``now`` (ValidationError otherwise), ``set_at`` = ``now``."""
        host = validate_cert_host(host)
        info = check_pair(host=host, cert_pem=cert_pem, key_pem=key_pem, now=now)
        rec = cls(host=host, cert_pem=cert_pem, key_pem=key_pem, source=source, info=info, set_at=now)
        rec.encode()  # (the size bound of the whole record)
        return rec

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "cert": self.cert_pem, "key": self.key_pem, "source": self.source,
                **self.info.to_dict(), "set_at": self.set_at}

    def encode(self) -> bytes:
        """The stored bytes; ValidationError if they exceed MAX_RECORD_BYTES."""
        data = dumps(self.to_dict())
        if len(data) > MAX_RECORD_BYTES:
            raise ValidationError(f"the record is {len(data)} bytes, at most {MAX_RECORD_BYTES} allowed")
        return data

    @classmethod
    def from_dict(cls, data: object, *, host: str | None = None, now: float | None = None) -> CertRecord:
        """A stored record, checked again as a pair (the stored ``names``, ``issuer``... are
        recomputed from the chain, never trusted).  ``host``: the key's host, which the record
        must name.  ``now``: also refuse a certificate outside its validity window at ``now``;
        ``None`` (readers of etcd): an expired certificate still loads (it is served until it is
        replaced, and ``cert ls`` shows it).  Unknown fields are ignored (newer writers may add
        some)."""
        d = require_mapping(data, what="certificate record")
        rec_host = validate_cert_host(d.get("host"), field="host")
        if host is not None and rec_host != host:
            raise ValidationError(f"record names {rec_host!r}, its key {host!r}", field="host")
        cert_pem, key_pem, source, set_at = d.get("cert"), d.get("key"), d.get("source"), d.get("set_at")
        if not isinstance(cert_pem, str) or not isinstance(key_pem, str):
            raise ValidationError("cert and key must be PEM strings", field="cert")
        if source not in SOURCES:
            raise ValidationError(f"{source!r} is not manual or acme", field="source")
        if isinstance(set_at, bool) or not isinstance(set_at, int | float) or not math.isfinite(set_at):
            raise ValidationError("must be a number (Unix seconds)", field="set_at")
        info = check_pair(host=rec_host, cert_pem=cert_pem, key_pem=key_pem, now=now)
        return cls(host=rec_host, cert_pem=cert_pem, key_pem=key_pem, source=source, info=info,
                   set_at=float(set_at))

    def summary(self) -> Mapping[str, Any]:
        """What ``cert ls`` and ``cert get`` show (no key)."""
        return {"host": self.host, "source": self.source, **self.info.to_dict(), "set_at": self.set_at}
