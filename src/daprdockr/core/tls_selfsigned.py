"""The node's default certificate: self-signed, for handshakes whose name has no certificate.

nginx needs a static ``ssl_certificate`` beside the per-name selection, and a client asking for
a name the cluster has no certificate for (or for none: no SNI) gets this one.  Its subject names
the node and no host (``daprdockr default certificate <node>``, SAN ``<node>.daprdockr.invalid``),
so no client can take it for a real site's.  No I/O: the caller stores the PEM.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LIFETIME_DAYS = 3650
RENEW_BEFORE = 30 * 86_400.0  # a default certificate this close to its end is made anew at start


def self_signed(*, node: str, now: float, days: int = LIFETIME_DAYS) -> tuple[str, str]:
    """A new (certificate PEM, private key PEM) pair: EC P-256, valid from an hour before ``now``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"daprdockr default certificate {node}"[:64])])
    start = datetime.datetime.fromtimestamp(now - 3600, tz=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"{node}.daprdockr.invalid")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def still_good(cert_pem: bytes, *, now: float) -> bool:
    """True if ``cert_pem`` parses and stays valid for more than :data:`RENEW_BEFORE`."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return False
    return cert.not_valid_after_utc.timestamp() - now > RENEW_BEFORE
