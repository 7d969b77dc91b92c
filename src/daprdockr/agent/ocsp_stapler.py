"""OCSP stapling for the certificates nginx serves by SNI (best effort).

nginx's ``ssl_stapling`` covers static certificates only, so the agent does it: for each served
certificate whose leaf names an http OCSP responder and whose chain holds its issuer,
:meth:`OcspStapler.staple_once` asks the responder, checks the answer
(:func:`~daprdockr.core.ocsp.check_response`) and hands nginx the DER response for that host
(``tls.lua`` staples it when the client asks for the status); it asks again after half the
response's validity (60 s to 12 h) and drops it when the certificate changes or the response
expires.  A responder that is down or answers badly is logged and counted, and retried with
backoff: the certificate is served without a staple meanwhile, never held back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import aiohttp

from daprdockr.adapters.ocsp_fetch import fetch_ocsp
from daprdockr.cancellation import within
from daprdockr.core.backoff import Backoff
from daprdockr.core.ocsp import OcspQuery, Staple, check_response, ocsp_query, pem_digest, refresh_delay
from daprdockr.errors import DaprDockrError

log = logging.getLogger(__name__)
Fetch = Callable[[str, bytes], Awaitable[bytes]]  # (url, DER request) -> DER response
StapleTable = Mapping[str, tuple[str, bytes]]  # host -> (pem_digest of the served PEM, DER response)
RETRY = Backoff(base=30.0, factor=2.0, max_delay=900.0)
IDLE = 300.0  # the longest sleep between two passes
PARALLEL = 8


class StapleReceiver(Protocol):
    """What the stapler feeds (the nginx manager)."""

    def set_staples(self, staples: StapleTable) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class _Entry:
    pem: str
    query: OcspQuery | None  # None: nothing to staple (no responder, or no issuer in the chain)
    staple: Staple | None = None
    due: float = 0.0
    failures: int = 0


class OcspStapler:
    name = "ocsp-stapler"

    def __init__(self, *, nginx: StapleReceiver, fetch: Fetch | None = None, timeout: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.nginx = nginx
        self.timeout = timeout
        self._fetch = fetch
        self._clock = clock
        self._certs: Mapping[str, str] = {}
        self._entries: dict[str, _Entry] = {}
        self._sent: StapleTable = {}
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self.failures = 0  # fetches that failed or gave an unusable answer (counter)

    @property
    def staples(self) -> int:
        """Hosts with a current staple."""
        return len(self._sent)

    def want(self, certs: Mapping[str, str]) -> None:
        """The served certificates (host -> PEM: chain then key) changed."""
        self._certs = certs
        self._wake.set()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self) -> None:
        while True:
            delay = await self.staple_once()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await within(self._wake.wait(), min(IDLE, max(1.0, delay)))

    async def staple_once(self) -> float:
        """Fetch the staples that are due, hand nginx the current ones; seconds until the next is due."""
        now = self._clock()
        self._entries = {h: self._entry(h, pem, now) for h, pem in self._certs.items()}
        due = [h for h, e in self._entries.items() if e.query is not None and e.due <= now]
        if due:
            limit = asyncio.Semaphore(PARALLEL)
            results = await asyncio.gather(*(self._refresh(h, self._entries[h], limit) for h in due))
            self._entries.update(zip(due, results, strict=True))
        now = self._clock()
        table = {h: (pem_digest(e.pem), e.staple.der) for h, e in self._entries.items()
                 if e.staple is not None and e.staple.next_update > now}
        if table != self._sent:
            self._sent = table
            self.nginx.set_staples(table)
        pending = [e.due for e in self._entries.values() if e.query is not None]
        return max(0.0, min(pending) - now) if pending else IDLE

    def _entry(self, host: str, pem: str, now: float) -> _Entry:
        old = self._entries.get(host)
        if old is not None and old.pem == pem:
            return old
        return _Entry(pem=pem, query=ocsp_query(pem), due=now)

    async def _refresh(self, host: str, entry: _Entry, limit: asyncio.Semaphore) -> _Entry:
        assert entry.query is not None
        async with limit:
            try:
                der = await self._ask(entry.query.url, entry.query.request)
                staple = check_response(der, query=entry.query, now=self._clock())
            except (DaprDockrError, ValueError) as exc:  # (ValueError: a response cryptography cannot read)
                self.failures += 1
                failures = entry.failures + 1
                delay = RETRY.delay(failures)
                log.warning("OCSP staple for %s from %s: %s (served without a new one; again in %.0f s)", host,
                            entry.query.url, exc, delay)
                return replace(entry, failures=failures, due=self._clock() + delay)
        now = self._clock()
        log.debug("OCSP staple for %s valid until %.0f", host, staple.next_update)
        return replace(entry, staple=staple, failures=0, due=now + refresh_delay(staple, now=now))

    async def _ask(self, url: str, request: bytes) -> bytes:
        if self._fetch is not None:
            return await self._fetch(url, request)
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return await fetch_ocsp(self._session, url=url, request=request, limit=self.timeout)
