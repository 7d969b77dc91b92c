"""A tiny OCSP responder for tests: aiohttp on a loopback address, answering POSTed requests with
``cryptography``'s OCSPResponseBuilder signed by a test CA (GOOD unless the serial is revoked)."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from tests.support.procs import free_port
from tests.support.tlsgen import Issued


def ocsp_answer(request_der: bytes, *, ca: Issued, leaf_pem: str | None = None, revoked: bool = False,
                validity: float = 3600.0, now: dt.datetime | None = None) -> bytes:
    """The DER response to ``request_der`` about the certificate in ``leaf_pem`` (its serial must
    match the request's), signed by ``ca``."""
    req = ocsp.load_der_ocsp_request(request_der)
    leaf = x509.load_pem_x509_certificate(leaf_pem.encode()) if leaf_pem else None
    if leaf is None or leaf.serial_number != req.serial_number:
        return ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(
            serialization.Encoding.DER)
    now = now or dt.datetime.now(dt.UTC)
    status = ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD
    builder = (ocsp.OCSPResponseBuilder()
               .add_response(cert=leaf, issuer=ca.cert, algorithm=hashes.SHA1(), cert_status=status,
                             this_update=now - dt.timedelta(minutes=1),
                             next_update=now + dt.timedelta(seconds=validity),
                             revocation_time=now if revoked else None, revocation_reason=None)
               .responder_id(ocsp.OCSPResponderEncoding.HASH, ca.cert))
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@dataclass
class Responder:
    """The running responder: :attr:`url` for leaves' AIA; :attr:`leaves` the PEMs it knows by serial."""

    url: str
    ca: Issued
    leaves: dict[int, str] = field(default_factory=dict)
    requests: int = 0

    def know(self, leaf_pem: str) -> None:
            self.leaves[x509.load_pem_x509_certificate(leaf_pem.encode()).serial_number] = leaf_pem

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        der = await request.read()
        serial = ocsp.load_der_ocsp_request(der).serial_number
        body = ocsp_answer(der, ca=self.ca, leaf_pem=self.leaves.get(serial))
        return web.Response(body=body, content_type="application/ocsp-response")


@contextlib.asynccontextmanager
async def ocsp_responder(*, ca: Issued, host: str = "127.0.0.24") -> AsyncIterator[Responder]:
    port = free_port(host)
    responder = Responder(url=f"http://{host}:{port}/", ca=ca)
    app = web.Application()
    app.router.add_post("/", responder.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        yield responder
    finally:
        await runner.cleanup()
