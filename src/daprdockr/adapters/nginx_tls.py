"""HTTPS in the agent's nginx: the node's default certificate file, and the certificates and ACME
answers and OCSP staples posted to nginx's control socket (changes only; all of them after nginx (re)started).

:class:`TlsPush` keeps what nginx should hold (:meth:`TlsPush.want`) and what it confirmed; the
nginx manager calls :meth:`TlsPush.push` from its loop.  A PEM nginx cannot read is skipped by
nginx (that host keeps what it had; the others are applied) and logged once per value here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from daprdockr.adapters.statedir import write_private
from daprdockr.core.nginx_render import NginxPaths
from daprdockr.core.nginx_tls import CertTable, acme_update, certs_update, ocsp_update, refused_certs
from daprdockr.core.tls_selfsigned import self_signed, still_good
from daprdockr.errors import ProxyError

log = logging.getLogger(__name__)
StapleTable = Mapping[str, tuple[str, bytes]]  # host -> (sha1 of its served PEM, DER OCSP response)


def ensure_default_cert(paths: NginxPaths, *, node: str) -> bool:
    """Write the node's self-signed default certificate and key unless a good one is there
    (keeping it keeps nginx.conf's files the same: a running nginx is adopted).  True if made."""
    try:
        if still_good(Path(paths.default_cert).read_bytes(), now=time.time()) and Path(paths.default_key).is_file():
            return False
    except OSError:
        pass
    cert, key = self_signed(node=node, now=time.time())
    try:
        write_private(Path(paths.default_key), key, mode=0o600)
        write_private(Path(paths.default_cert), cert, mode=0o644)
    except OSError as exc:
        raise ProxyError(f"cannot write the default certificate in {paths.root}: {exc}") from exc
    log.info("made the node's default self-signed certificate %s", paths.default_cert)
    return True


class TlsPush:
    """The certificates and ACME answers nginx holds, kept current by posting the differences."""

    def __init__(self) -> None:
        self._certs: CertTable = {}
        self._challenges: Mapping[str, str] = {}
        self._sent_certs: CertTable | None = None  # None: nginx has none of ours yet
        self._sent_challenges: Mapping[str, str] | None = None
        self._staples: StapleTable = {}
        self._sent_staples: StapleTable | None = None
        self._generation = 0
        self._warned: dict[str, str] = {}  # host -> the PEM nginx refused (warned once)
        self.refused: dict[str, str] = {}  # host -> nginx's reason

    def want(self, *, certs: CertTable, challenges: Mapping[str, str]) -> None:
        self._certs, self._challenges = certs, challenges

    def want_staples(self, staples: StapleTable) -> None:
        self._staples = staples

    def reset(self) -> None:
        """nginx (re)started or was adopted: everything goes in again, replacing what it had."""
        self._sent_certs = self._sent_challenges = None
        self._sent_staples = None

    @property
    def pending(self) -> bool:
        return (self._sent_certs is not self._certs or self._sent_challenges is not self._challenges
                or self._sent_staples is not self._staples)

    @property
    def served(self) -> int:
        """Certificates nginx confirmed (without the ones it refused)."""
        return len(set(self._sent_certs or ()) - set(self.refused))

    async def push(self, session: aiohttp.ClientSession) -> bool:
        """Post what changed; True if anything was posted.  ProxyError if nginx did not take it."""
        posted = False
        certs, challenges, staples = self._certs, self._challenges, self._staples
        if self._sent_certs is not certs:
            if self._sent_certs is None:
                self._generation += 1
            old = self._sent_certs
            body = certs_update(old, certs, generation=self._generation)
            if body:
                changed = {h for h in certs if old is None or old.get(h) != certs[h]}
                self._note_refused(certs, changed, await self._post(session, "/certs", body))
                posted = True
            self._sent_certs = certs
        if self._sent_challenges is not challenges:
            body = acme_update(self._sent_challenges, challenges, generation=self._generation)
            if body:
                await self._post(session, "/acme", body)
                posted = True
            self._sent_challenges = challenges
        if self._sent_staples is not staples:  # (after the certificates: nginx checks a staple against its PEM)
            body = ocsp_update(self._sent_staples, staples, generation=self._generation)
            if body:
                await self._post(session, "/ocsp", body)
                posted = True
            self._sent_staples = staples
        return posted

    @staticmethod
    async def _post(session: aiohttp.ClientSession, path: str, body: bytes) -> str:
        try:
            async with session.post(f"http://nginx{path}", data=body) as resp:
                answer = await resp.text()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ProxyError(f"posting {path} to nginx failed: {exc}") from exc
        if resp.status != 200:
            raise ProxyError(f"nginx refused the {path} update ({resp.status}): {answer.strip()[:300]}")
        return answer

    def _note_refused(self, certs: CertTable, changed: set[str], answer: str) -> None:
        """Warn once per refused value; keep the refusals of the hosts this body did not touch."""
        refused = refused_certs(answer)
        for host, reason in refused.items():
            if self._warned.get(host) != certs.get(host):
                self._warned[host] = certs.get(host, "")
                log.warning("nginx cannot read the certificate of %s (%s): it keeps serving what it had", host,
                            reason)
        kept = {h: r for h, r in self.refused.items() if h in certs and h not in changed}
        self.refused = {**kept, **refused}
