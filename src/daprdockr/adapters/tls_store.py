"""The TLS keys in etcd (:mod:`daprdockr.core.tls_keys`) over the cluster's
:class:`~daprdockr.adapters.etcd_store.EtcdStore`: certificates, the ACME account (created only if
absent, so concurrent agents end with one), order locks and challenge answers bound to the
ordering agent's lease (a lock is taken only if absent: a transaction), order records, and the
paged read at one revision plus the watch that keep a :class:`~daprdockr.core.tls_state.TlsState`."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from daprdockr.adapters.etcd_reads import prefix_range
from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.core.acme_records import AcmeAccount, AcmeChallenge, AcmeLock, AcmeOrder
from daprdockr.core.jsondata import dumps
from daprdockr.core.mirror import WatchEvent
from daprdockr.core.state import RawKV, value_json
from daprdockr.core.tls import CertRecord, validate_cert_host
from daprdockr.core.tls_keys import TlsSchema, validate_token
from daprdockr.core.tls_state import TlsState, decode_tls
from daprdockr.errors import ConflictError, StoreError, ValidationError

log = logging.getLogger(__name__)
T = TypeVar("T")
_RETRIES = 5  # compare-and-delete / compare-and-replace rounds lost to concurrent writers


class TlsStore:
    """Reads and writes of ``<prefix>-tls/``.  Values are checked before they are written
    (ValidationError, nothing written); a malformed stored value never raises from :meth:`read`
    (it lands in ``TlsState.bad``, for the caller to log once)."""

    def __init__(self, *, store: EtcdStore, schema: TlsSchema | None = None) -> None:
        self.store = store
        self.schema = schema or TlsSchema(store.schema.prefix)

    # ------------------------------------------------------------------ the whole prefix
    async def read(self) -> tuple[TlsState, int]:
        """Every TLS key, read in pages at one revision, decoded; and that revision."""
        kvs, revision = await self.store.read_prefix(self.schema.root)
        return decode_tls(self.schema, kvs, revision=revision), revision

    async def read_certs(self) -> tuple[TlsState, int]:
        """The certificates and ACME orders only (what ``cert ls`` shows), at one revision: an
        operator's etcd role needs no access to the ACME account, locks or challenges."""
        ranges = [prefix_range(self.schema.certs_prefix), prefix_range(self.schema.orders_prefix)]
        kvs, revision = await self.store.read_ranges(sorted(ranges), what="read certificates")
        return decode_tls(self.schema, kvs, revision=revision), revision

    def watch(self, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        """The events under the TLS prefix from ``start_revision``, forever (a ``resync`` after
        every reconnect or compaction: read again)."""
        return self.store.watch(self.schema.root, start_revision=start_revision)

    # ------------------------------------------------------------------ certificates
    async def put_cert(self, rec: CertRecord) -> int:
        """Store ``rec`` (replacing the host's certificate); the revision of the write."""
        return await self._put(self.schema.cert(rec.host), rec.encode(), what="put certificate")

    async def get_cert(self, host: str) -> CertRecord | None:
        """The host's stored certificate (expired ones too), ``None`` if there is none; a malformed
        value raises ConflictError with the reason."""
        host = validate_cert_host(host)
        kv = await self.store.get_kv(self.schema.cert(host))
        if kv is None:
            return None
        try:
            return CertRecord.from_dict(value_json(kv), host=host)
        except ValidationError as exc:
            raise ConflictError(f"the stored certificate of {host} is malformed: {exc}") from None

    async def delete_cert(self, host: str) -> bool:
        """Delete the host's certificate (a malformed value too); False if there was none."""
        return await self._delete(self.schema.cert(validate_cert_host(host)), what="delete certificate")

    # ------------------------------------------------------------------ ACME: locks and challenges
    async def try_lock(self, host: str, *, node: str, lease: int) -> bool:
        """Take the order lock of ``host`` on ``lease`` iff nobody holds it; whether we got it.
        It goes with the lease: an agent that dies frees it."""
        value = dumps(AcmeLock(node=node, since=time.time()).to_dict())
        key = self.schema.lock(validate_cert_host(host))
        return bool(await self.store.transaction(compares=[(key, "create", 0)], ops=[(key, value, lease)],
                                                 what="take ACME lock"))

    async def unlock(self, host: str, *, node: str) -> bool:
        """Release the order lock of ``host`` iff ``node`` holds it; whether it was released."""
        key = self.schema.lock(validate_cert_host(host))
        for _ in range(_RETRIES):
            kv = await self.store.get_kv(key)
            lock = None if kv is None else _decoded(kv, AcmeLock.from_dict, key=key)
            if kv is None or lock is None or lock.node != node:
                return False
            if await self.store.transaction(compares=[(key, "mod", kv.mod_revision)], ops=[(key, None, 0)],
                                            what="release ACME lock"):
                return True
        raise StoreError(f"cannot release the ACME lock of {host}: it changed {_RETRIES} times", transient=True)

    async def put_challenge(self, token: str, *, host: str, authorization: str, lease: int) -> int:
        """Publish an HTTP-01 answer on ``lease`` (every agent's nginx serves it)."""
        ch = AcmeChallenge.from_dict({"host": host, "authorization": authorization}, token=validate_token(token))
        return await self._put(self.schema.challenge(token), dumps(ch.to_dict()), lease=lease, what="put challenge")

    async def delete_challenge(self, token: str) -> bool:
        return await self._delete(self.schema.challenge(validate_token(token)), what="delete challenge")

    # ------------------------------------------------------------------ ACME: orders and the account
    async def get_order(self, host: str) -> AcmeOrder | None:
        """The host's order record; ``None`` if absent or malformed (logged: it is overwritten next)."""
        key = self.schema.order(validate_cert_host(host))
        kv = await self.store.get_kv(key)
        return None if kv is None else _decoded(kv, AcmeOrder.from_dict, key=key)

    async def put_order(self, host: str, order: AcmeOrder) -> int:
        key = self.schema.order(validate_cert_host(host))
        AcmeOrder.from_dict(order.to_dict())  # (checked as a reader will)
        return await self._put(key, dumps(order.to_dict()), what="put ACME order")

    async def delete_order(self, host: str) -> bool:
        return await self._delete(self.schema.order(validate_cert_host(host)), what="delete ACME order")

    async def get_account(self) -> AcmeAccount | None:
        """The stored account; ``None`` if absent or malformed (logged)."""
        kv = await self.store.get_kv(self.schema.account)
        return None if kv is None else _decoded(kv, AcmeAccount.from_dict, key=self.schema.account)

    async def put_account(self, acc: AcmeAccount, *, overwrite: bool = False) -> AcmeAccount:
        """Store ``acc`` iff no account is stored (a malformed one is replaced) and return the stored
        account: ``acc``, or the one another agent stored first.  ``overwrite``: replace whatever is
        stored (the same account with its URL, once registered)."""
        key, value = self.schema.account, dumps(AcmeAccount.from_dict(acc.to_dict()).to_dict())
        if overwrite:
            await self._put(key, value, what="put ACME account")
            return acc
        for _ in range(_RETRIES):
            if await self.store.transaction(compares=[(key, "create", 0)], ops=[(key, value, 0)],
                                            what="create ACME account"):
                return acc
            kv = await self.store.get_kv(key)
            if kv is None:
                continue  # (deleted meanwhile: try to create it again)
            stored = _decoded(kv, AcmeAccount.from_dict, key=key)
            if stored is not None:
                return stored
            if await self.store.transaction(compares=[(key, "mod", kv.mod_revision)], ops=[(key, value, 0)],
                                            what="replace malformed ACME account"):
                return acc
        raise StoreError(f"cannot store the ACME account: {key} changed {_RETRIES} times", transient=True)

    # ------------------------------------------------------------------ helpers
    async def _put(self, key: str, value: bytes, *, what: str, lease: int = 0) -> int:
        return await self.store.transaction(compares=[], ops=[(key, value, lease)], what=what)

    async def _delete(self, key: str, *, what: str) -> bool:
        """Delete ``key`` if present (a compare on its mod revision tells whether this call did)."""
        for _ in range(_RETRIES):
            kv = await self.store.get_kv(key)
            if kv is None:
                return False
            if await self.store.transaction(compares=[(key, "mod", kv.mod_revision)], ops=[(key, None, 0)], what=what):
                return True
        raise StoreError(f"cannot {what}: {key} changed {_RETRIES} times", transient=True)


def _decoded(kv: RawKV, parse: Callable[[object], T], *, key: str) -> T | None:
    """``parse(value)``, or ``None`` with a warning when the stored value is malformed."""
    try:
        return parse(value_json(kv))
    except ValidationError as exc:
        log.warning("ignoring malformed %s: %s", key, exc)
        return None
