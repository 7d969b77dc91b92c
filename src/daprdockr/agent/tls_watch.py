"""The TLS watch: certificates and ACME answers from etcd (``<prefix>-tls/``) to this node's nginx.

:meth:`TlsWatch.sync_once` reads the whole TLS prefix at one revision
(:meth:`~daprdockr.adapters.tls_store.TlsStore.read`); :meth:`TlsWatch.run` then follows the
watch from the revision after it, keeping the :class:`~daprdockr.core.tls_state.TlsState` per
event, and reads again on the watch's ``resync`` (a reconnect or a compaction).  Whenever the
served certificates or the ACME answers change, nginx is handed the new ones (it posts only the
differences: :class:`~daprdockr.adapters.nginx_tls.TlsPush`).

A malformed value is logged once (per key and value) and skipped; a host whose value turned
malformed keeps the certificate it had (:func:`~daprdockr.core.tls_serving.served_certs`).
Without ``serve_keys`` (etcd reached with neither TLS nor auth, and no ``--allow-insecure-keys``)
no stored key is served, only the node's default certificate; ACME answers still are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from daprdockr.adapters.tls_store import TlsStore
from daprdockr.core.backoff import Backoff
from daprdockr.core.tls_serving import served_certs
from daprdockr.core.tls_state import TlsState, apply_event
from daprdockr.errors import DaprDockrError

log = logging.getLogger(__name__)
INSECURE_WARNING = (
    "etcd is reached with neither TLS nor auth: anyone who can reach it can read the private keys stored there, "
    "so this agent serves none of them (only its default certificate); secure etcd (see SECURITY.md, 'TLS private "
    "keys') or start the agent with --allow-insecure-keys to accept the risk")


class TlsReceiver(Protocol):
    """What the watch feeds (the nginx manager)."""

    def set_tls(self, *, certs: Mapping[str, str], challenges: Mapping[str, str]) -> None: ...


class TlsWatch:
    name = "tls-watch"

    def __init__(self, *, store: TlsStore, nginx: TlsReceiver, serve_keys: bool, https: bool = True,
                 on_certs: Callable[[Mapping[str, str]], None] | None = None) -> None:
        self.store = store
        self.nginx = nginx
        self.serve_keys = serve_keys
        self.https = https  # False: this node's nginx has no HTTPS listener (said once when a certificate comes)
        self._told_no_https = False
        self.on_certs = on_certs  # also told the served certificates when they change (the OCSP stapler)
        self.state = TlsState()
        self.errors = 0
        self._certs: Mapping[str, str] = {}
        self._challenges: Mapping[str, str] = {}
        self._warned: dict[str, str] = {}  # bad key -> the reason logged
        self._revision = 0

    async def start(self) -> None:
        """A first read, so nginx serves the certificates as the agent comes up (retried by
        :meth:`run` if etcd does not answer now)."""
        try:
            await self.sync_once()
        except DaprDockrError as exc:
            log.error("reading the TLS keys failed (%s); retrying", exc)

    async def stop(self) -> None:
        return None

    async def sync_once(self) -> int:
        """Read every TLS key, hand nginx what changed; the revision read."""
        state, revision = await self.store.read()
        self._apply(state)
        self._revision = revision
        return revision

    async def run(self) -> None:
        """Forever: follow the watch; read again on a resync; retry a failed read with backoff."""
        backoff, failures = Backoff(base=0.5, max_delay=5.0), 0
        while True:
            try:
                if self._revision == 0:
                    await self.sync_once()
                await self._follow()
                failures = 0
            except DaprDockrError as exc:
                if not exc.transient:
                    raise
                self.errors += 1
                failures += 1
                log.warning("TLS watch failed (%s); again shortly", exc)
                self._revision = 0
                await asyncio.sleep(backoff.delay(failures))

    async def _follow(self) -> None:
        """Apply the watch's events until a resync (then read again)."""
        schema = self.store.schema
        events = self.store.watch(self._revision + 1)
        try:
            async for ev in events:
                if ev.kind == "resync":
                    await self.sync_once()
                    return
                self._apply(apply_event(self.state, schema, ev))
        finally:
            close = getattr(events, "aclose", None)  # (the store's watch is a generator: end its stream)
            if close is not None:
                await close()

    def _apply(self, state: TlsState) -> None:
        self.state = state
        self._warn_bad(state)
        if not self.https and state.certs and not self._told_no_https:
            self._told_no_https = True
            log.warning("etcd holds certificates (%s) but this agent's nginx has no HTTPS listener: it was "
                        "started without one (--https-listen auto finds certificates at start only); restart "
                        "it or give --https-listen ADDR:PORT", ", ".join(sorted(state.certs)[:5]))
        certs = served_certs(state, self.store.schema, previous=self._certs) if self.serve_keys else {}
        challenges = state.challenges
        if certs != self._certs or challenges != self._challenges:
            if certs != self._certs and self.on_certs is not None:
                self.on_certs(certs)
            self._certs, self._challenges = certs, challenges
            self.nginx.set_tls(certs=certs, challenges=challenges)

    def _warn_bad(self, state: TlsState) -> None:
        for key, reason in state.bad.items():
            if self._warned.get(key) != reason:
                self._warned[key] = reason
                log.warning("skipping malformed %s: %s", key, reason)
        for key in set(self._warned) - set(state.bad):
            del self._warned[key]
