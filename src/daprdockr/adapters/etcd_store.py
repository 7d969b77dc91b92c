"""etcd adapter (aetcd): reads, transactions, instance claims, node heartbeats, leases and watches
(specs and their versions: :mod:`daprdockr.adapters.versions_store`).

Design:

* One :class:`EtcdStore` talks to one endpoint at a time and fails over to the next one of the
  configured list when a call hits a transient error (connection refused, timeout, no leader).
  Every call is bounded by ``timeout``; when all endpoints fail, :class:`StoreUnavailableError`
  names every endpoint tried.
* Library errors never leave this module: aetcd/grpc exceptions become
  :mod:`daprdockr.errors` types, marked transient or terminal.
* Instance ownership is a transaction: *claim* = "create the key only if it does not exist,
  bound to my lease"; *update/release* = "only if the key's create revision is still the one
  my claim created" (so a key that expired and was re-claimed by another node is never touched).
* :meth:`watch` is an endless async iterator of :class:`WatchEvent` over the whole prefix that
  reconnects with exponential backoff, resumes from the last seen revision, and yields a
  ``resync`` event after every reconnect (or compaction) so that level-triggered consumers
  re-read the full state instead of trusting a possibly incomplete event stream.
* Range reads (:meth:`read_prefix`, :meth:`keys_under`, :meth:`snapshot`, :meth:`snapshot_of`)
  come in pages, every page after the first pinned to the first one's revision: however many
  keys there are, no response passes gRPC's receive limit (a page that does, of oversized
  garbage values, is asked again with half as many keys), and the pages still make one
  consistent state.  The first page has ``PAGE_KEYS`` keys; each next one as many as fit
  ``PAGE_BYTES`` at the largest key and value of the page before (``PAGE_KEYS`` to
  ``MAX_PAGE_KEYS``): etcd counts every key left in the range for each page, so many small
  pages cost time quadratic in the keys (BENCHMARKS.md, "Scale: the cost of one event at 1k, 10k
  and 100k instances").  Not larger: a page is one call,
  which must stay well within the call's timeout on a loaded machine too.  aetcd 1.0 cannot
  set a Range request's ``limit`` or ``revision``, so these calls go to etcd's gRPC KV API
  directly (with the client's stub, channel, auth token and ``hasleader`` metadata).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import aetcd
import aetcd.exceptions as aetcd_exc
import aetcd.rpc as aetcd_rpc
import aetcd.rtypes as aetcd_rtypes
import aetcd.transactions as aetcd_txn
import aetcd.watcher as aetcd_watcher
import grpc

from daprdockr.cancellation import owner_cancelled, within
from daprdockr.core.endpoints import Endpoint, EtcdSecurity, check_security
from daprdockr.core.etcd_health import FIX as SPACE_FIX
from daprdockr.core.jsondata import dumps
from daprdockr.core.keys import KeySchema
from daprdockr.core.mirror import WatchEvent
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord, NodeRecord
from daprdockr.core.removal import KeyEvent
from daprdockr.core.state import ClusterState, RawKV, decode_state
from daprdockr.errors import (
    DaprDockrError,
    LeaseLostError,
    StoreAccessError,
    StoreError,
    StoreFullError,
    StoreRefusedError,
    StoreUnavailableError,
    ValidationError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# Every call: a member without a leader answers "no leader" at once instead of hanging.
REQUIRE_LEADER: tuple[tuple[str, str], ...] = (("hasleader", "true"),)
CHANNEL_OPTIONS = {"grpc.max_receive_message_length": 64 * 1024 * 1024}
# The watch stream: gRPC pings find a hung member (etcd refuses pings closer than 5 s apart).
KEEPALIVE_OPTIONS = {"grpc.keepalive_time_ms": 10_000, "grpc.keepalive_timeout_ms": 3_000,
                     "grpc.http2.max_pings_without_data": 0}
# Keys of the first Range request of a read, and the fewest of any later one: even records of
# MAX_RECORD_BYTES (64 KiB) keep such a page under the 64 MiB receive limit.
PAGE_KEYS = 1000
# Later pages are sized to about PAGE_BYTES at the largest key and value of the page before
# (typical instance records, ~300 bytes: ~7 000 keys), at most MAX_PAGE_KEYS keys.
PAGE_BYTES = 2 * 1024 * 1024
MAX_PAGE_KEYS = 8192
MAX_WRITES_IN_FLIGHT = 16
READ_RESTARTS = 3  # a paginated read whose pinned revision was compacted starts over at most this often

_TRANSIENT = (
    aetcd_exc.ConnectionFailedError,
    aetcd_exc.ConnectionTimeoutError,
    aetcd_exc.InternalError,
    asyncio.TimeoutError,
    ConnectionError,
    OSError,
)


def _txn_revision(responses: list[Any]) -> int:
    """The store revision a successful one-operation transaction created."""
    op = responses[0]
    for field in ("response_put", "response_delete_range"):
        if op.HasField(field):
            return int(getattr(op, field).header.revision)
    raise StoreError(f"unexpected transaction response {op!r}")


KeyRange = tuple[bytes, bytes]  # etcd's [key, range_end)


def range_end(prefix: bytes) -> bytes:
    """The (exclusive) end of etcd's range over every key starting with ``prefix``: the prefix
    cut after its last byte below 0xff, that byte incremented; ``b"\\0"`` (no end) if there is none.
    (aetcd's ``prefix_range_end`` keeps trailing 0xff bytes: an empty range.)"""
    stem = prefix.rstrip(b"\xff")
    if not stem:
        return b"\0"
    return stem[:-1] + bytes([stem[-1] + 1])


def next_key(last: bytes) -> bytes:
    """The smallest key after ``last`` in etcd's byte order: where the next page starts."""
    return last + b"\0"


def prefix_range(prefix: str) -> KeyRange:
    start = prefix.encode()
    return start, range_end(start)


def key_range(key: str) -> KeyRange:
    """The range holding exactly ``key``."""
    start = key.encode()
    return start, next_key(start)


class _Compacted(StoreError):
    """The revision a paginated read is pinned to was compacted between two pages."""


class _PageTooLarge(StoreError):
    """A page's response was over the gRPC receive limit (values far beyond MAX_RECORD_BYTES)."""


@dataclass(frozen=True, slots=True)
class _Page:
    raw: Sequence[Any]  # the response's KeyValue messages
    last: bytes  # the raw last key (the next page starts after it)
    revision: int  # the store revision the page was read at (the header's)
    more: bool
    largest: int = 0  # the largest key plus value of the page, in bytes

    @property
    def kvs(self) -> list[RawKV]:
        """The page's key/values, made on each access (a read makes them while its next page is on the way)."""
        return [raw_kv(kv) for kv in self.raw]


def raw_kv(kv: Any) -> RawKV:
    """One key/value etcd returned (a gRPC ``KeyValue`` or aetcd's wrapper of one)."""
    return RawKV(key=kv.key.decode(errors="replace"), value=kv.value, lease=kv.lease,
                 create_revision=kv.create_revision, mod_revision=kv.mod_revision)


def next_page_keys(largest: int) -> int:
    """How many keys to ask for after a page whose largest key and value took ``largest`` bytes."""
    return max(PAGE_KEYS, min(MAX_PAGE_KEYS, PAGE_BYTES // max(1, largest)))


def translate(exc: BaseException, *, what: str) -> DaprDockrError:
    """Map an aetcd/grpc/OS exception to the project's error types."""
    if isinstance(exc, DaprDockrError):
        return exc
    text = str(exc)
    if any(hint in text for hint in ("andshake", "ertificate", "TSI_", "SSL")):
        return StoreRefusedError(f"etcd {what} failed: TLS handshake refused (check --etcd-cacert, --etcd-cert "
                                 f"and --etcd-key): {text.splitlines()[0][:300]}")
    if "invalid auth token" in text or "auth: revision" in text:  # the token expired: a new client re-authenticates
        return StoreUnavailableError(f"etcd {what} failed: {text}")
    if "database space exceeded" in text:
        return StoreFullError(f"etcd {what} failed: etcd's database is full (alarm NOSPACE: {text.splitlines()[0]}); "
                              f"running services keep serving, but nothing can change until you {SPACE_FIX}")
    if "permission denied" in text:
        return StoreAccessError(f"etcd {what} failed: permission denied (the etcd user's role must allow read and "
                          "write on the prefix)", transient=False)
    if isinstance(exc, _TRANSIENT):
        return StoreUnavailableError(f"etcd {what} failed: {exc}")
    if "lease not found" in text or "requested lease not found" in text:
        return LeaseLostError(f"etcd {what}: lease not found")
    if "no leader" in text or "Unavailable" in text or "DEADLINE" in text.upper():
        return StoreUnavailableError(f"etcd {what} failed: {exc}")
    return StoreError(f"etcd {what} failed: {exc}", transient=False)


def _read_pem(path: Path | None, *, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}", field=what) from exc


def channel_credentials(security: EtcdSecurity) -> grpc.ChannelCredentials:
    """TLS credentials for https endpoints (files read once, when the store is made)."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem(security.cacert, what="--etcd-cacert"),
        private_key=_read_pem(security.key, what="--etcd-key"),
        certificate_chain=_read_pem(security.cert, what="--etcd-cert"),
    )


def raise_as_aetcd(exc: grpc.aio.AioRpcError) -> None:
    """Raise the aetcd exception aetcd's own calls raise for ``exc`` (what :func:`translate` knows),
    for the calls made on gRPC stubs directly.  aetcd keeps its mapping private: this is the one
    place that uses it (tests/adapters/test_aetcd_internals.py fails if aetcd changes it)."""
    aetcd_exc._handle_exception(exc)


# What aetcd's connect() sets up on a client, set here on a channel opened by us (aetcd opens
# only insecure ones and takes no channel): the one place that writes aetcd's internals
# (tests/adapters/test_aetcd_internals.py fails if aetcd changes them).
AETCD_STUBS = {"kvstub": aetcd_rpc.KVStub, "clusterstub": aetcd_rpc.ClusterStub, "leasestub": aetcd_rpc.LeaseStub,
               "maintenancestub": aetcd_rpc.MaintenanceStub}


def aetcd_connected(client: aetcd.Client) -> bool:
    """aetcd's own flag: its calls connect first unless it is set."""
    return bool(client._connected.is_set())


def hand_to_aetcd(client: aetcd.Client, channel: grpc.aio.Channel, *, timeout: float) -> None:
    """Make ``client``'s aetcd calls (get, put, transactions, leases, watches) use ``channel``, with
    the metadata already set on ``client``."""
    client.channel = channel
    for name, stub in AETCD_STUBS.items():
        setattr(client, name, stub(channel))
    client._watcher = aetcd_watcher.Watcher(aetcd_rpc.WatchStub(channel), timeout=timeout, metadata=client.metadata)
    client._connected.set()


@dataclass(frozen=True, slots=True)
class Stubs:
    """etcd's gRPC services, for the calls aetcd has no method for (or drops fields of)."""

    kv: aetcd_rpc.KVStub
    lease: aetcd_rpc.LeaseStub
    maintenance: aetcd_rpc.MaintenanceStub

    @classmethod
    def on(cls, channel: grpc.aio.Channel) -> Stubs:
        return cls(kv=aetcd_rpc.KVStub(channel), lease=aetcd_rpc.LeaseStub(channel),
                   maintenance=aetcd_rpc.MaintenanceStub(channel))


class _Client(aetcd.Client):  # type: ignore[misc]
    """aetcd's client with the channel opened here: TLS, etcd auth, our gRPC options and metadata.

    aetcd opens only insecure channels, so :meth:`connect` opens a ``grpc.aio`` secure channel
    itself for an https endpoint, and authenticates with etcd's user/password (the token goes on
    every call).  ``hasleader: true`` makes a member that lost its leader refuse a call (and end
    a watch) at once instead of letting it hang, so callers fail over to a member of the majority.
    """

    def __init__(
        self, *, endpoint: Endpoint, timeout: float, options: dict[str, int],
        credentials: grpc.ChannelCredentials | None, user: str | None, password: str | None,
    ) -> None:
        seconds = max(1, round(timeout))
        super().__init__(host=endpoint.host, port=endpoint.port, timeout=seconds, connect_wait_timeout=seconds,
                         options=options)
        self.endpoint = endpoint
        self.call_timeout = float(seconds)  # every call's (aetcd's calls have the same)
        self._channel_options = list(options.items())
        self.stubs: Stubs | None = None
        self._credentials = credentials
        self._user, self._secret = user, password

    async def renew_token(self) -> None:
        """Authenticate (again: etcd's tokens expire) and put the new token on every later call."""
        try:
            resp = await aetcd_rpc.AuthStub(self.channel).Authenticate(
                aetcd_rpc.AuthenticateRequest(name=self._user, password=self._secret), timeout=self.call_timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                              grpc.StatusCode.PERMISSION_DENIED):
                raise StoreAccessError(f"etcd {self.endpoint}: authentication as {self._user!r} failed: "
                                 f"{exc.details()}", transient=False) from None
            raise
        self.metadata = (*REQUIRE_LEADER, ("token", str(resp.token)))

    async def connect(self) -> None:
        if aetcd_connected(self):
            return
        target, options = f"{self.endpoint.host}:{self.endpoint.port}", self._channel_options
        if self.endpoint.tls:
            if self._credentials is None:
                raise ValidationError(f"{self.endpoint} is https but no TLS settings were given", field="etcd")
            self.channel = grpc.aio.secure_channel(target, self._credentials, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        self.metadata = REQUIRE_LEADER
        if self._user is not None:
            await self.renew_token()
        self.stubs = Stubs.on(self.channel)
        hand_to_aetcd(self, self.channel, timeout=self.call_timeout)

    async def unary(self, method: Callable[[Stubs], Callable[..., Awaitable[T]]], request: Any) -> T:
        """One call of a gRPC method of :attr:`stubs` (``method(stubs)``), with the client's timeout and metadata."""
        await self.connect()
        assert self.stubs is not None
        result: T = await method(self.stubs)(request, timeout=self.call_timeout, metadata=self.metadata)
        return result


@dataclass(eq=False)
class _Conn:
    """One client (one gRPC channel) to one endpoint, shared by every call made through it.

    A failed call *retires* the connection (new calls go to the next endpoint) but never closes
    it under the calls still in flight on it: grpc.aio would end them with ``CancelledError``.
    The last call to leave a retired connection closes it.
    """

    client: _Client
    index: int
    inflight: int = 0
    retired: bool = False
    closing: bool = False


class _LeaseIs(aetcd_txn.BaseCompare):  # type: ignore[misc]
    """Compare on the lease a key is bound to (etcd >= 3.3; aetcd has no helper for it)."""

    def build_compare(self, compare: Any) -> None:
        compare.target = aetcd_rpc.Compare.LEASE
        compare.lease = int(self.value)


class EtcdStore:
    """The etcd-backed store.  Use as ``async with EtcdStore(...) as store``."""

    def __init__(
        self,
        *,
        endpoints: Sequence[Endpoint],
        schema: KeySchema | None = None,
        timeout: float = 3.0,
        probe_interval: float = 2.0,
        security: EtcdSecurity | None = None,
    ) -> None:
        if not endpoints:
            raise ValidationError("no endpoint given", field="etcd")
        self.endpoints = tuple(endpoints)
        self.security = security or EtcdSecurity()
        clear = check_security(self.endpoints, self.security)
        if clear:
            log.warning("the etcd password goes in clear text to %s (use https:// endpoints)", ", ".join(clear))
        self._credentials = (channel_credentials(self.security) if any(e.tls for e in self.endpoints)
                             else None)
        self.schema = schema or KeySchema()
        self.timeout = timeout
        self.probe_interval = probe_interval
        self._index = 0
        self._conn: _Conn | None = None
        self._closers: set[asyncio.Task[None]] = set()
        self.errors = 0  # transient failures seen (exported as a metric by the agent)
        # conditional writes (claims, updates, releases) in flight at once: a node dealt hundreds
        # of numbers at once queues them here instead of sending them all, so the calls that
        # matter more (the lease keepalive, the watch) are not timed out behind a burst, and a
        # timeout does not retire the channel under everything else in flight
        self._writes = asyncio.Semaphore(MAX_WRITES_IN_FLIGHT)

    # ------------------------------------------------------------------ connection management
    async def __aenter__(self) -> EtcdStore:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def endpoint(self) -> Endpoint:
        return self.endpoints[self._index]

    async def connect(self) -> None:
        """Connect to the first endpoint that answers a cheap read."""
        await self._call(lambda c: c.get(self.schema.root.encode()), what="connect")

    async def close(self) -> None:
        """Close every connection (call when no call of this store is in flight any more)."""
        if self._conn is not None:
            self._retire(self._conn)
        if self._closers:
            await asyncio.wait(set(self._closers), timeout=self.timeout)

    async def server_version(self) -> str:
        """The version of the etcd server that answers (its Maintenance.Status), e.g. ``3.4.23``."""

        async def op(c: _Client) -> str:
            resp = await c.unary(lambda s: s.maintenance.Status, aetcd_rpc.StatusRequest())
            return str(resp.version)

        return await self._call(op, what="status")

    def _new_client(self, index: int, *, keepalive: bool = False) -> _Client:
        options = dict(CHANNEL_OPTIONS)
        if keepalive:  # a long-lived stream: detect a peer that stopped answering
            options.update(KEEPALIVE_OPTIONS)
        return _Client(endpoint=self.endpoints[index], timeout=self.timeout, options=options,
                       credentials=self._credentials, user=self.security.user, password=self.security.password)

    def _current(self) -> _Conn:
        if self._conn is None:
            self._conn = _Conn(client=self._new_client(self._index), index=self._index)
        return self._conn

    def _retire(self, conn: _Conn) -> None:
        """New calls go to the next endpoint; ``conn`` closes once its last call is done."""
        if self._conn is conn:
            self._conn = None
            self._index = (conn.index + 1) % len(self.endpoints)
        conn.retired = True
        self._close_if_idle(conn)

    def _close_if_idle(self, conn: _Conn) -> None:
        if conn.retired and conn.inflight == 0 and not conn.closing:
            conn.closing = True
            task = asyncio.ensure_future(self._close_client(conn.client))
            self._closers.add(task)
            task.add_done_callback(self._closers.discard)

    async def _close_client(self, client: _Client) -> None:
        try:
            await within(client.close(), self.timeout)
        except Exception:
            log.debug("error closing an etcd client", exc_info=True)

    async def _call(
        self, op: Callable[[Any], Awaitable[T]], *, what: str, attempt_timeout: float | None = None
    ) -> T:
        """Run ``op(client)``; on a transient error fail over through every endpoint once.

        Each attempt is bounded by ``attempt_timeout`` (default: the store's).  A ``CancelledError``
        that is not our own task's cancellation (a channel closed under the call) is a transient
        failure, never passed on as if the caller had been cancelled.  An expired auth token is
        renewed once on the same endpoint (a new client authenticates again).
        """
        limit = attempt_timeout or self.timeout
        last: DaprDockrError | None = None
        attempts, renewed = len(self.endpoints), False
        while attempts > 0:
            attempts -= 1
            conn = self._current()
            conn.inflight += 1
            expired = False
            try:
                return await within(op(conn.client), limit)
            except asyncio.CancelledError:
                if owner_cancelled():
                    raise
                err: DaprDockrError = StoreUnavailableError(f"etcd {what}: the call was cancelled under us")
            except Exception as exc:
                expired = "invalid auth token" in str(exc)
                err = translate(exc, what=what)
                if isinstance(err, StoreRefusedError):  # the same settings go to every endpoint
                    raise StoreRefusedError(str(err), endpoints=(str(self.endpoints[conn.index]),)) from exc
                if not err.transient or isinstance(err, LeaseLostError):
                    raise err from exc
            finally:
                conn.inflight -= 1
                self._close_if_idle(conn)
            if expired and not renewed:
                renewed, attempts = True, attempts + 1
                with contextlib.suppress(Exception):
                    await within(conn.client.renew_token(), limit)
                    continue
            self.errors += 1
            last = err
            log.warning("etcd %s via %s failed: %s", what, self.endpoints[conn.index], err)
            self._retire(conn)
        raise StoreUnavailableError(
            f"etcd unreachable ({what}; last error: {last})",
            endpoints=tuple(str(e) for e in self.endpoints),
        )

    async def call(self, op: Callable[[_Client], Awaitable[T]], *, what: str) -> T:
        """One call on the client, with the store's failover and error translation (for the
        maintenance calls of :mod:`~daprdockr.adapters.etcd_maintenance`)."""
        return await self._call(op, what=what)

    # ------------------------------------------------------------------ raw reads
    async def read_prefix(self, prefix: str, *, page_keys: int | None = None) -> tuple[list[RawKV], int]:
        """All key/values under ``prefix`` and the store revision they were read at (paginated)."""
        return await self.read_ranges([prefix_range(prefix)], what=f"read {prefix}", page_keys=page_keys)

    async def keys_under(self, prefix: str, *, page_keys: int | None = None) -> list[str]:
        """The keys under ``prefix`` (values not read; paginated)."""
        kvs, _ = await self.read_ranges([prefix_range(prefix)], what=f"list {prefix}", keys_only=True,
                                        page_keys=page_keys)
        return sorted(kv.key for kv in kvs)

    async def read_ranges(
        self, ranges: Sequence[KeyRange], *, what: str, keys_only: bool = False, page_keys: int | None = None,
    ) -> tuple[list[RawKV], int]:
        """The key/values of every range, in order, all at one store revision, and that revision.

        Pages after the first are pinned to the first page's revision; each page is a call of its
        own (a failover between pages goes on at that revision).  If etcd compacted the revision
        meanwhile, the whole read starts over at a new one, at most ``READ_RESTARTS`` times.
        ``page_keys`` fixes the keys per page (default: sized by :func:`next_page_keys`).
        """
        for attempt in range(1, READ_RESTARTS + 1):
            try:
                return await self._read_pinned(ranges, what=what, keys_only=keys_only, page_keys=page_keys)
            except _Compacted as exc:
                log.warning("etcd %s: %s; reading again (%d/%d)", what, exc, attempt, READ_RESTARTS)
        raise StoreError(f"etcd {what}: compacted while reading, {READ_RESTARTS} times", transient=True)

    async def _read_pinned(
        self, ranges: Sequence[KeyRange], *, what: str, keys_only: bool, page_keys: int | None,
    ) -> tuple[list[RawKV], int]:
        """One paginated read of ``ranges`` at the first page's revision; raises _Compacted.

        The next page is asked for as soon as a page is in, and the page's key/values are made
        while etcd prepares it (BENCHMARKS.md, "Scale")."""
        kvs: list[RawKV] = []
        revision, limit = 0, max(1, page_keys or PAGE_KEYS)

        def ask(key: bytes, end: bytes) -> asyncio.Future[_Page]:
            return asyncio.ensure_future(self._call(partial(
                self._range_page, key=key, end=end, revision=revision, limit=limit, keys_only=keys_only), what=what))

        for start, end in ranges:
            key, ahead = start, None
            try:
                while True:
                    pending, ahead = ahead or ask(key, end), None
                    try:
                        page = await pending
                    except _PageTooLarge:
                        if limit == 1:
                            raise
                        limit //= 2
                        log.warning("etcd %s: a page was over the receive limit; %d keys per page now", what, limit)
                        continue
                    revision = revision or page.revision
                    if page.more and page.raw:
                        key = next_key(page.last)
                        if page_keys is None:
                            limit = next_page_keys(page.largest)
                        ahead = ask(key, end)
                        for _ in range(4):  # the loop steps that send it (3: the call's wait_for
                            await asyncio.sleep(0)  # task, this page's call, gRPC's own task; one spare)
                    kvs.extend(page.kvs)
                    if ahead is None:
                        break
            finally:
                if ahead is not None:  # (the read failed or was cancelled)
                    ahead.cancel()
                    await asyncio.gather(ahead, return_exceptions=True)
        return kvs, revision

    async def _range_page(
        self, c: _Client, *, key: bytes, end: bytes, revision: int, limit: int, keys_only: bool,
    ) -> _Page:
        """One Range request (revision 0: the newest), with the client's timeout and metadata as in
        aetcd's own calls.  Unsorted: etcd then stops at ``limit`` in its index, and answers in key order."""
        request = aetcd_rpc.RangeRequest(key=key, range_end=end, limit=limit, revision=revision, keys_only=keys_only)
        try:
            resp = await c.unary(lambda s: s.kv.Range, request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise _PageTooLarge(f"page of {limit} keys from {key!r}: {exc.details()}") from exc
            if "required revision has been compacted" in str(exc.details()):
                raise _Compacted(f"revision {revision} was compacted") from exc
            raise_as_aetcd(exc)
            raise
        last = bytes(resp.kvs[-1].key) if resp.kvs else key
        largest = max((len(kv.key) + len(kv.value) for kv in resp.kvs), default=0)
        return _Page(raw=resp.kvs, last=last, revision=int(resp.header.revision), more=bool(resp.more),
                     largest=largest)

    async def snapshot(self) -> ClusterState:
        """The whole cluster state at one revision; malformed keys are logged and skipped."""
        kvs, revision = await self.read_prefix(self.schema.root)
        return self._decode(kvs, revision)

    async def snapshot_of(self, name: ServiceName) -> ClusterState:
        """The state of one service at one revision: its spec, rollout, instances, slots and
        history, and every node record (other services, applied and drain keys are not read)."""
        s = self.schema
        ranges = sorted([key_range(s.service(name)), key_range(s.rollout(name)), prefix_range(s.instances_of(name)),
                         prefix_range(s.slots_of(name)), prefix_range(s.history(name)), prefix_range(s.nodes_prefix)])
        kvs, revision = await self.read_ranges(ranges, what=f"read {name}")
        return self._decode(kvs, revision)

    def _decode(self, kvs: list[RawKV], revision: int) -> ClusterState:
        state = decode_state(self.schema, kvs, revision=revision)
        for key, reason in state.skipped:
            log.warning("skipping malformed etcd key %s: %s", key, reason)
        return state

    # ------------------------------------------------------------------ keys and transactions
    async def get_kv(self, key: str) -> RawKV | None:
        """One key's value and revisions, ``None`` if it is absent."""
        got = await self._call(lambda c: c.get(key.encode()), what="get")
        return None if got is None else raw_kv(got)

    async def _write_if(
        self, key: str, *, compare: Literal["create", "mod"], equals: int, value: bytes | None, lease: int = 0,
        what: str, on_lease: int = 0, created: int = 0,
    ) -> WatchEvent | None:
        """One transaction: put ``value`` (delete when ``None``) iff the key's create or mod revision
        equals ``equals`` (0: the key is absent).  Returns the event the write produced, ``None``
        when the compare failed.  Callers hand the event on (read-your-writes) after this returns,
        outside the timed and retried call.  With ``on_lease`` the key must also still be bound to
        that lease (a key another node took over keeps its create revision but not its lease);
        ``created`` is the key's create revision when the compare does not tell it."""
        k = key.encode()

        async def op(c: aetcd.Client) -> int:
            target = c.transactions.create(k) if compare == "create" else c.transactions.mod(k)
            checks = [target == equals] + ([_LeaseIs(k) == on_lease] if on_lease else [])
            success = [c.transactions.put(k, value, lease=lease or None) if value is not None
                       else c.transactions.delete(k)]
            ok, responses = await c.transaction(compare=checks, success=success, failure=[])
            return _txn_revision(responses) if ok else 0

        async with self._writes:  # (waiting here is outside the call's timeout)
            revision = await self._call(op, what=what)
        if not revision:
            return None
        if value is None:
            return WatchEvent(kind="delete", key=key, revision=revision)
        created = created or (revision if equals == 0 else (equals if compare == "create" else 0))
        return WatchEvent(kind="put", key=key, value=value, revision=revision, lease=lease, create_revision=created)

    async def transaction(
        self, *, compares: Sequence[tuple[str, Literal["mod", "create"], int]],
        ops: Sequence[tuple[str, bytes | None, int]], what: str,
    ) -> int:
        """One etcd transaction: if every ``(key, mod|create, revision)`` compare holds, apply every
        ``(key, value or None to delete, lease)``; returns the new revision, or 0 if a compare failed."""

        async def op(c: aetcd.Client) -> int:
            checks = [(c.transactions.mod(k.encode()) if kind == "mod" else c.transactions.create(k.encode())) == rev
                      for k, kind, rev in compares]
            success = [c.transactions.put(k.encode(), v, lease=lease or None) if v is not None
                       else c.transactions.delete(k.encode()) for k, v, lease in ops]
            ok, responses = await c.transaction(compare=checks, success=success, failure=[])
            return _txn_revision(responses) if ok else 0

        return await self._call(op, what=what)

    # ------------------------------------------------------------------ leases
    async def grant_lease(self, ttl: int) -> int:
        lease = await self._call(lambda c: c.lease(ttl), what="grant lease")
        return int(lease.id)

    async def keepalive(self, lease_id: int, *, attempt_timeout: float | None = None) -> int:
        """Refresh the lease; returns the remaining TTL, raises LeaseLostError if it is gone.

        ``attempt_timeout`` bounds each endpoint's attempt (a hung member must not eat the lease's TTL).
        """
        reply = await self._call(
            lambda c: c.refresh_lease(lease_id), what="keepalive", attempt_timeout=attempt_timeout)
        ttl = int(getattr(reply, "TTL", 0))
        if ttl <= 0:
            raise LeaseLostError(f"lease {lease_id:x} expired")
        return ttl

    async def revoke_lease(self, lease_id: int) -> int:
        """Revoke the lease (every key on it is deleted); returns the revision of that deletion."""

        async def op(c: _Client) -> int:  # (aetcd's revoke_lease drops the revision)
            resp = await c.unary(lambda s: s.lease.LeaseRevoke, aetcd_rpc.LeaseRevokeRequest(ID=lease_id))
            return int(resp.header.revision)

        return await self._call(op, what="revoke lease")

    # ------------------------------------------------------------------ nodes and instances
    async def put_applied(self, node_id: str, revision: int, *, lease: int) -> None:
        """Publish the etcd revision whose removals this node's nginx and DNS have applied."""
        key = self.schema.applied(node_id).encode()
        await self._call(lambda c: c.put(key, dumps({"revision": revision}), lease=lease), what="put applied")

    async def put_node(self, node: NodeRecord, *, lease: int) -> None:
        key = self.schema.node(node.node_id).encode()
        await self._call(lambda c: c.put(key, dumps(node.to_dict()), lease=lease), what="put node")

    async def claim_instance(self, rec: InstanceRecord, *, lease: int) -> WatchEvent | None:
        """Create the instance key iff absent, on ``lease``; ``None`` if another node has it."""
        return await self._write_if(self.schema.instance(rec.service, rec.number), compare="create", equals=0,
                                    value=dumps(rec.to_dict()), lease=lease, what="claim instance")

    async def update_instance(self, rec: InstanceRecord, *, lease: int) -> WatchEvent | None:
        """Overwrite our own instance key; ``None`` if it is no longer the key we created, or no
        longer on the lease ``rec`` was read with (another node took it over)."""
        return await self._write_if(self.schema.instance(rec.service, rec.number), compare="create",
                                    equals=rec.create_revision, value=dumps(rec.to_dict()), lease=lease,
                                    what="update instance", on_lease=rec.lease)

    async def release_instance(self, rec: InstanceRecord) -> WatchEvent | None:
        """Delete our own instance key (only if it is still the one our claim created, on our lease)."""
        return await self._write_if(self.schema.instance(rec.service, rec.number), compare="create",
                                    equals=rec.create_revision, value=None, what="release instance",
                                    on_lease=rec.lease)

    async def take_over_instance(self, rec: InstanceRecord, *, lease: int) -> WatchEvent | None:
        """Move an instance key onto our ``lease`` with our record ``rec``, iff it is unchanged since
        it was read (``rec.mod_revision``): a drained node's instance handed over, or a malformed or
        lease-less key rewritten from our container."""
        return await self._write_if(self.schema.instance(rec.service, rec.number), compare="mod",
                                    equals=rec.mod_revision, value=dumps(rec.to_dict()), lease=lease,
                                    what="take over instance", created=rec.create_revision)

    async def key_history(self, key: str, *, until: int, within: float = 2.0) -> list[KeyEvent]:
        """The writes of one key up to revision ``until``, as etcd still keeps them (a watch from
        the oldest revision not compacted; nothing is written).  Raises StoreError when they
        cannot be read within ``within`` seconds."""
        start = 1
        for _ in range(3):
            client = self._new_client(self._index)
            found: list[KeyEvent] = []
            try:
                async with asyncio.timeout(within):
                    watch = await client.watch(key.encode(), start_revision=start)
                    try:
                        async for ev in watch:
                            revision = int(ev.kv.mod_revision)
                            if revision > until:
                                break
                            deleted = ev.kind == aetcd_rtypes.EventKind.DELETE
                            found.append(KeyEvent(revision=revision, value=None if deleted else bytes(ev.kv.value)))
                            if revision == until:
                                break
                    finally:
                        await watch.cancel()
                return found
            except aetcd_exc.RevisionCompactedError as exc:
                start = int(exc.compacted_revision) + 1
            except asyncio.CancelledError:
                if owner_cancelled():
                    raise
                raise StoreUnavailableError("key history read cancelled under us") from None
            except Exception as exc:  # (TimeoutError included)
                raise StoreError(f"cannot read the history of {key}: {translate(exc, what='watch')}",
                                 transient=True) from exc
            finally:
                await self._close_client(client)
        raise StoreError(f"cannot read the history of {key}: compacted while reading", transient=True)

    async def instance_history(self, service: ServiceName, number: int, *, until: int) -> list[KeyEvent]:
        """The writes of an instance key up to revision ``until`` (:meth:`key_history`)."""
        return await self.key_history(self.schema.instance(service, number), until=until)

    async def purge_instance(self, *, key: str, mod_revision: int) -> WatchEvent | None:
        """Delete an unusable instance key (malformed, or bound to no lease) if it is unchanged."""
        return await self._write_if(key, compare="mod", equals=mod_revision, value=None, what="purge instance")

    async def put_raw(self, key: str, value: bytes, *, lease: int = 0) -> None:
        """Write an arbitrary key, optionally on a lease (tests and tooling only)."""
        await self._call(lambda c: c.put(key.encode(), value, lease=lease or None), what="put")

    # ------------------------------------------------------------------ watch
    async def watch(
        self,
        prefix: str | None = None,
        *,
        start_revision: int | None = None,
        max_backoff: float = 1.0,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Events under ``prefix`` (default: the whole schema root), forever.

        The watch has a client (a gRPC channel) of its own, so no failing call elsewhere can end
        it.  When the stream has been silent for ``probe_interval`` seconds, one cheap read over
        the same channel checks that the member still answers and still has a leader; a hung or
        leaderless member, an ended stream or a failed probe move the watch to the next endpoint,
        with jittered backoff.  After a reconnect it yields ``resync`` first, then continues
        from the revision after the last event seen.
        """
        prefix = prefix or self.schema.root
        next_rev = start_revision
        backoff = 0.1
        first = True
        index = self._index
        while True:
            client = self._new_client(index, keepalive=True)
            try:
                stream = await within(
                    client.watch_prefix(prefix.encode(), start_revision=next_rev), self.timeout)
                if not first:
                    yield WatchEvent(kind="resync")
                first = False
                backoff = 0.1
                async for ev in self._events(client, stream):
                    next_rev = ev.revision + 1
                    yield ev
                raise StoreUnavailableError("watch stream ended")
            except asyncio.CancelledError:
                if owner_cancelled():
                    raise
                err: DaprDockrError = StoreUnavailableError("watch cancelled under us")
            except aetcd_exc.RevisionCompactedError:
                log.warning("watch from revision %s compacted; resyncing", next_rev)
                next_rev = None
                first = False
                yield WatchEvent(kind="resync")
                continue
            except Exception as exc:
                err = translate(exc, what="watch")
            finally:
                await self._close_client(client)
            self.errors += 1
            log.warning("etcd watch via %s interrupted (%s); reconnecting in %.1fs", self.endpoints[index], err,
                        backoff)
            first = False
            index = (index + 1) % len(self.endpoints)
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(max_backoff, backoff * 2)

    async def _events(self, client: _Client, stream: Any) -> AsyncIterator[WatchEvent]:
        """The events of one watch stream; probes the member whenever the stream is silent."""
        events = stream.__aiter__()

        async def next_event() -> Any:
            return await events.__anext__()

        pending: asyncio.Future[Any] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(next_event())
                done, _ = await asyncio.wait({pending}, timeout=self.probe_interval)
                if not done:
                    await self._probe(client)
                    continue
                try:
                    ev = pending.result()
                except StopAsyncIteration:
                    return
                pending = None
                kv = ev.kv
                kind: Literal["put", "delete"] = "delete" if str(ev.kind).upper().endswith("DELETE") else "put"
                yield WatchEvent(kind=kind, key=kv.key.decode(errors="replace"), value=kv.value,
                                 revision=int(kv.mod_revision), lease=int(kv.lease),
                                 create_revision=int(kv.create_revision))
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
            try:
                await within(stream.cancel(), 1)
            except Exception:
                log.debug("watch cancel failed", exc_info=True)

    async def _probe(self, client: _Client) -> None:
        """One linearizable read on the watch's own channel; raises if the member cannot serve it."""
        try:
            try:
                await within(client.get(self.schema.root.encode()), min(self.timeout, 1.5))
            except aetcd_exc.ClientError as exc:
                if "invalid auth token" not in str(exc):
                    raise
                await within(client.renew_token(), min(self.timeout, 1.5))  # the stream lives on
                await within(client.get(self.schema.root.encode()), min(self.timeout, 1.5))
        except asyncio.CancelledError:
            if owner_cancelled():
                raise
            raise StoreUnavailableError("watch probe cancelled under us") from None
        except Exception as exc:
            raise translate(exc, what="watch probe") from exc
