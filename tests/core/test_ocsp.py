"""The pure OCSP parts: which certificates get a request, which answers are taken as staples, when
to ask again, and the ``/ocsp`` body for nginx."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp as x509_ocsp

from daprdockr.core.nginx_tls import ocsp_update
from daprdockr.core.ocsp import Staple, check_response, ocsp_query, pem_digest, refresh_delay
from daprdockr.errors import ValidationError
from tests.support.ocsp_responder import ocsp_answer
from tests.support.tlsgen import Issued, issue, make_ca

URL = "http://127.0.0.24:8080/"
CA = make_ca("ocsp test CA")
OTHER_CA = make_ca("another CA")
LEAF = issue(["a.example.com"], ca=CA, ocsp_url=URL)
SERVED = LEAF.chain_pem(CA) + LEAF.key_pem


@pytest.mark.parametrize(("served", "url"), [
    (SERVED, URL),
    (LEAF.cert_pem + LEAF.key_pem, None),  # no issuer in the chain
    (issue(["a.example.com"], ca=CA).chain_pem(CA), None),  # no responder in the AIA
    (issue(["a.example.com"], ca=CA, ocsp_url="https://ocsp.example.com/").chain_pem(CA), None),  # not http
    ("garbage", None),
])
def test_query_only_with_a_responder_and_an_issuer(served: str, url: str | None) -> None:
    query = ocsp_query(served)
    assert (query.url if query else None) == url
    if query:
        req = x509_ocsp.load_der_ocsp_request(query.request)
        assert req.serial_number == LEAF.cert.serial_number


def _signed_by(signer: Issued, *, status: x509_ocsp.OCSPCertStatus, next_in: float) -> bytes:
    now = dt.datetime.now(dt.UTC)
    return (x509_ocsp.OCSPResponseBuilder()
            .add_response(cert=LEAF.cert, issuer=CA.cert, algorithm=hashes.SHA1(), cert_status=status,
                          this_update=now - dt.timedelta(seconds=60), next_update=now + dt.timedelta(seconds=next_in),
                          revocation_time=now if status == x509_ocsp.OCSPCertStatus.REVOKED else None,
                          revocation_reason=None)
            .responder_id(x509_ocsp.OCSPResponderEncoding.HASH, signer.cert)
            .sign(signer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


OTHER_LEAF = issue(["a.example.com"], ca=CA, ocsp_url=URL)
CASES = {
    "good": (lambda req: ocsp_answer(req, ca=CA, leaf_pem=LEAF.cert_pem), None),
    "revoked": (lambda req: ocsp_answer(req, ca=CA, leaf_pem=LEAF.cert_pem, revoked=True), "REVOKED"),
    "unauthorized": (lambda req: ocsp_answer(req, ca=CA, leaf_pem=None), "UNAUTHORIZED"),
    "another certificate": (lambda req: ocsp_answer(
        x509_ocsp.OCSPRequestBuilder().add_certificate(OTHER_LEAF.cert, CA.cert, hashes.SHA1()).build().public_bytes(
            serialization.Encoding.DER), ca=CA, leaf_pem=OTHER_LEAF.cert_pem), "not about this certificate"),
    "signed by a stranger": (lambda req: _signed_by(OTHER_CA, status=x509_ocsp.OCSPCertStatus.GOOD,
                                                    next_in=3600), "not signed"),
    "expired": (lambda req: _signed_by(CA, status=x509_ocsp.OCSPCertStatus.GOOD, next_in=-1), "nextUpdate"),
    "garbage": (lambda req: b"\x30\x03junk", "not an OCSP response"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_check_response(case: str) -> None:
    query = ocsp_query(SERVED)
    assert query is not None
    make, error = CASES[case]
    der = make(query.request)
    if error is None:
        staple = check_response(der, query=query, now=time.time())
        assert staple.der == der and staple.next_update > time.time() + 3000
    else:
        with pytest.raises(ValidationError, match=error):
            check_response(der, query=query, now=time.time())


@pytest.mark.parametrize(("this", "next_", "now", "delay"), [
    (0, 3600, 0, 1800),  # half the validity
    (0, 7 * 86400, 0, 12 * 3600),  # at most 12 h
    (0, 60, 0, 59),  # at least 60 s, but never past nextUpdate
    (0, 100, 0, 60),
    (0, 3600, 3599.5, 0),  # about to expire: now
    (0, 3600, 3000, 599),
])
def test_refresh_delay(this: float, next_: float, now: float, delay: float) -> None:
    assert refresh_delay(Staple(der=b"", this_update=this, next_update=next_), now=now) == delay


def test_ocsp_body_sends_changes_and_everything_after_a_restart() -> None:
    digest = pem_digest(SERVED)
    first = {"a.example.com": (digest, b"\x00der\n")}
    assert ocsp_update(None, first, generation=3) == (
        f"full 3\nset a.example.com {digest} 5\n".encode() + b"\x00der\n\n")
    assert ocsp_update(first, first, generation=3) == b""
    assert ocsp_update(first, {"bad host!": ("00", b"x")}, generation=3) == b"del a.example.com\n"
