"""The etcd connection pool: one client (one gRPC channel) to one endpoint at a time, failing over
to the next endpoint of the configured list when a call hits a transient error (connection refused,
timeout, no leader).  Every call is bounded by ``timeout``; when all endpoints fail,
:class:`~daprdockr.errors.StoreUnavailableError` names every endpoint tried.  Library errors never
leave it (:mod:`daprdockr.adapters.etcd_errors`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import aetcd.rpc as aetcd_rpc

from daprdockr.adapters.etcd_client import CHANNEL_OPTIONS, KEEPALIVE_OPTIONS, EtcdClient, channel_credentials
from daprdockr.adapters.etcd_errors import translate
from daprdockr.cancellation import owner_cancelled, within
from daprdockr.core.endpoints import Endpoint, EtcdSecurity, check_security
from daprdockr.core.keys import KeySchema
from daprdockr.errors import (
    DaprDockrError,
    LeaseLostError,
    StoreRefusedError,
    StoreUnavailableError,
    ValidationError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_WRITES_IN_FLIGHT = 16


@dataclass(eq=False)
class _Conn:
    """One client (one gRPC channel) to one endpoint, shared by every call made through it.

    A failed call *retires* the connection (new calls go to the next endpoint) but never closes
    it under the calls still in flight on it: grpc.aio would end them with ``CancelledError``.
    The last call to leave a retired connection closes it.
    """

    client: EtcdClient
    index: int
    inflight: int = 0
    retired: bool = False
    closing: bool = False


class EtcdPool:
    """Failover and error translation for every call of :class:`~daprdockr.adapters.etcd_store.EtcdStore`
    (its base: the reads, writes, leases and watches are built on :meth:`_call`)."""

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

    async def __aenter__(self) -> Self:
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

        async def op(c: EtcdClient) -> str:
            resp = await c.unary(lambda s: s.maintenance.Status, aetcd_rpc.StatusRequest())
            return str(resp.version)

        return await self._call(op, what="status")

    def _new_client(self, index: int, *, keepalive: bool = False) -> EtcdClient:
        options = dict(CHANNEL_OPTIONS)
        if keepalive:  # a long-lived stream: detect a peer that stopped answering
            options.update(KEEPALIVE_OPTIONS)
        return EtcdClient(endpoint=self.endpoints[index], timeout=self.timeout, options=options,
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

    async def _close_client(self, client: EtcdClient) -> None:
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

    async def call(self, op: Callable[[EtcdClient], Awaitable[T]], *, what: str) -> T:
        """One call on the client, with the store's failover and error translation (for the
        maintenance calls of :mod:`~daprdockr.adapters.etcd_maintenance`)."""
        return await self._call(op, what=what)
