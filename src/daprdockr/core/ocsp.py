"""OCSP stapling, the pure parts: the request for a served certificate (its leaf's AIA responder,
the issuer being the next certificate of the chain), the check of the responder's answer (GOOD,
for that certificate, signed by its issuer or a responder it delegated to, not past next_update)
and when to ask again (half the validity, between 60 s and 12 h)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from daprdockr.errors import ValidationError

MIN_REFRESH = 60.0
MAX_REFRESH = 12 * 3600.0
NO_NEXT_UPDATE = 3600.0  # a response without nextUpdate is served this long after its thisUpdate
SKEW = 300.0  # a thisUpdate this far in the future is still taken (clocks differ)


@dataclass(frozen=True, slots=True, kw_only=True)
class OcspQuery:
    """What to ask for one served certificate."""

    url: str
    request: bytes  # DER OCSPRequest
    leaf: x509.Certificate
    issuer: x509.Certificate


@dataclass(frozen=True, slots=True, kw_only=True)
class Staple:
    """A checked OCSP response (DER) and its validity."""

    der: bytes
    this_update: float
    next_update: float


def pem_digest(served_pem: str) -> str:
    """The sha1 (hex) of the PEM nginx holds for a host: a staple is sent with it, and nginx takes
    it only while it still holds that PEM (a rotated certificate never gets the old one's staple)."""
    return hashlib.sha1(served_pem.encode(), usedforsecurity=False).hexdigest()


def responder_url(leaf: x509.Certificate) -> str | None:
    """The leaf's first ``http://`` OCSP responder (AIA), or None."""
    try:
        aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    for desc in aia:
        if desc.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
                desc.access_location, x509.UniformResourceIdentifier):
            url = desc.access_location.value
            if url.lower().startswith("http://"):
                return url
    return None


def ocsp_query(served_pem: str) -> OcspQuery | None:
    """The OCSP request for the certificate in ``served_pem`` (chain, then key), or None when its
    leaf names no http responder or the chain has no issuer after it."""
    try:
        chain = x509.load_pem_x509_certificates(served_pem.encode())
    except ValueError:
        return None
    if len(chain) < 2:
        return None
    leaf, issuer = chain[0], chain[1]
    url = responder_url(leaf)
    if url is None:
        return None
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()
    return OcspQuery(url=url, request=request.public_bytes(serialization.Encoding.DER), leaf=leaf, issuer=issuer)


def check_response(der: bytes, *, query: OcspQuery, now: float) -> Staple:
    """``der`` as a staple for ``query``'s certificate, or ValidationError saying why not."""
    try:
        resp = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        raise ValidationError(f"not an OCSP response: {exc}") from exc
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise ValidationError(f"responder answered {resp.response_status.name}")
    single = _single_for(resp, query)
    if single.certificate_status != ocsp.OCSPCertStatus.GOOD:
        raise ValidationError(f"certificate status {single.certificate_status.name}")
    _check_signature(resp, query.issuer)
    this = single.this_update_utc.timestamp()
    nxt = single.next_update_utc.timestamp() if single.next_update_utc else this + NO_NEXT_UPDATE
    if this > now + SKEW:
        raise ValidationError("thisUpdate is in the future")
    if nxt <= now:
        raise ValidationError("past its nextUpdate")
    return Staple(der=der, this_update=this, next_update=nxt)


def refresh_delay(staple: Staple, *, now: float) -> float:
    """Seconds until the staple is fetched again: half its validity, at least 60 s and at most 12 h,
    and never after its nextUpdate."""
    half = (staple.next_update - staple.this_update) / 2
    delay = min(MAX_REFRESH, max(MIN_REFRESH, half))
    return max(0.0, min(delay, staple.next_update - now - 1.0))


def _single_for(resp: ocsp.OCSPResponse, query: OcspQuery) -> ocsp.OCSPSingleResponse:
    request = ocsp.load_der_ocsp_request(query.request)
    for single in resp.responses:
        if single.serial_number == query.leaf.serial_number and single.issuer_key_hash == request.issuer_key_hash:
            return single
    raise ValidationError("the response is not about this certificate")


def _check_signature(resp: ocsp.OCSPResponse, issuer: x509.Certificate) -> None:
    """Signed by the issuer itself, or by a certificate the issuer signed for OCSP signing."""
    signers = [issuer]
    for cert in resp.certificates:
        try:
            cert.verify_directly_issued_by(issuer)
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING in eku:
            signers.append(cert)
    for signer in signers:
        if _verifies(signer.public_key(), resp.signature, resp.tbs_response_bytes, resp.signature_hash_algorithm):
            return
    raise ValidationError("the response is not signed by the certificate's issuer (or its OCSP responder)")


def _verifies(key: Any, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm | None) -> bool:
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            return False
    except InvalidSignature:
        return False
    return True
