"""Asking an OCSP responder (RFC 6960 over HTTP POST) with aiohttp; every failure is an
:class:`~daprdockr.errors.OcspError` (transient: stapling is best effort and retried later)."""

from __future__ import annotations

import aiohttp

from daprdockr.errors import OcspError

MAX_RESPONSE = 64 * 1024


async def fetch_ocsp(session: aiohttp.ClientSession, *, url: str, request: bytes, limit: float = 10.0) -> bytes:
    """The DER response of the responder at ``url`` to ``request`` (DER), within ``limit`` seconds."""
    try:
        async with session.post(url, data=request, headers={"Content-Type": "application/ocsp-request"},
                                timeout=aiohttp.ClientTimeout(total=limit), allow_redirects=False) as resp:
            if resp.status != 200:
                raise OcspError(f"OCSP responder {url} answered HTTP {resp.status}")
            body = await resp.content.read(MAX_RESPONSE + 1)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise OcspError(f"OCSP responder {url} failed: {exc or type(exc).__name__}") from exc
    if len(body) > MAX_RESPONSE:
        raise OcspError(f"OCSP responder {url} answered more than {MAX_RESPONSE} bytes")
    return body
