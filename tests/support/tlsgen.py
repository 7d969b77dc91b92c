"""Test certificates made in memory with ``cryptography``: a CA and server certificates for given
names, validity windows and key types, as PEM text (what ``daprdockr cert set`` reads)."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

DAY = 86400.0


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: Any
    cert_pem: str  # the leaf alone
    key_pem: str

    def chain_pem(self, *issuers: Issued) -> str:
        return self.cert_pem + "".join(i.cert_pem for i in issuers)


def new_key(kind: str = "ec") -> Any:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "rsa1024":
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: Any, *, password: bytes | None = None) -> str:
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc).decode()


def _when(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.UTC)


def issue(names: list[str], *, ca: Issued | None = None, key: Any = None, cn: str | None = None,
          not_before: float | None = None, not_after: float | None = None, is_ca: bool = False,
          san: bool = True, ocsp_url: str | None = None) -> Issued:
    """A certificate for DNS ``names`` (subjectAltName unless ``san=False``), signed by ``ca``
    (self-signed without), valid from ``not_before`` (default: a day ago) to ``not_after``
    (default: in 30 days); ``ocsp_url``: an OCSP responder in its authorityInfoAccess."""
    now = time.time()
    key = key or new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or (names[0] if names else "test"))])
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(ca.cert.subject if ca else subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(_when(now - DAY if not_before is None else not_before))
               .not_valid_after(_when(now + 30 * DAY if not_after is None else not_after))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if san and names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    if ocsp_url:
        builder = builder.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
    cert = builder.sign(ca.key if ca else key, hashes.SHA256())
    return Issued(cert=cert, key=key, cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
                  key_pem=key_pem(key))


def make_ca(name: str = "Test CA") -> Issued:
    return issue([], cn=name, is_ca=True)
