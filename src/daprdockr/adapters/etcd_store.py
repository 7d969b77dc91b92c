"""etcd adapter (aetcd): desired specs, instance claims, node heartbeats and watches.

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
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import aetcd
import aetcd.exceptions as aetcd_exc

from daprdockr.core.endpoints import Endpoint
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import InstanceRecord, NodeRecord, ServiceSpec, dumps
from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState, RawKV, decode_state, decode_value
from daprdockr.errors import (
    DaprDockrError,
    LeaseLostError,
    StoreError,
    StoreUnavailableError,
    ValidationError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT = (
    aetcd_exc.ConnectionFailedError,
    aetcd_exc.ConnectionTimeoutError,
    aetcd_exc.InternalError,
    asyncio.TimeoutError,
    ConnectionError,
    OSError,
)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """``put``/``delete`` of one key, or ``resync``: the stream was interrupted, re-read all."""

    kind: Literal["put", "delete", "resync"]
    key: str = ""
    value: bytes = b""
    revision: int = 0
    lease: int = 0
    create_revision: int = 0


def _txn_revision(responses: list[Any]) -> int:
    """The store revision a successful one-operation transaction created."""
    op = responses[0]
    for field in ("response_put", "response_delete_range"):
        if op.HasField(field):
            return int(getattr(op, field).header.revision)
    raise StoreError(f"unexpected transaction response {op!r}")


def translate(exc: BaseException, *, what: str) -> DaprDockrError:
    """Map an aetcd/grpc/OS exception to the project's error types."""
    if isinstance(exc, DaprDockrError):
        return exc
    if isinstance(exc, _TRANSIENT):
        return StoreUnavailableError(f"etcd {what} failed: {exc}")
    text = str(exc)
    if "lease not found" in text or "requested lease not found" in text:
        return LeaseLostError(f"etcd {what}: lease not found")
    if "no leader" in text or "Unavailable" in text or "DEADLINE" in text.upper():
        return StoreUnavailableError(f"etcd {what} failed: {exc}")
    return StoreError(f"etcd {what} failed: {exc}", transient=False)


class EtcdStore:
    """The etcd-backed store.  Use as ``async with EtcdStore(...) as store``."""

    def __init__(
        self,
        *,
        endpoints: Sequence[Endpoint],
        schema: KeySchema | None = None,
        timeout: float = 3.0,
    ) -> None:
        if not endpoints:
            raise ValidationError("no endpoint given", field="etcd")
        self.endpoints = tuple(endpoints)
        self.schema = schema or KeySchema()
        self.timeout = timeout
        self._index = 0
        self._client: aetcd.Client | None = None
        self._lock = asyncio.Lock()
        self.errors = 0  # transient failures seen (exported as a metric by the agent)
        # Called with the event each of our successful instance writes produces, before the
        # watch delivers it: the agent applies it to its mirror at once (read-your-writes), so
        # a reconcile pass never re-plans from a view that lacks its own completed writes.
        self.write_listeners: list[Callable[[WatchEvent], None]] = []

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
        await self._call(lambda c: c.get(self.schema.prefix.encode()), what="connect")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), timeout=self.timeout)
            except Exception:
                log.debug("error closing etcd client", exc_info=True)

    def _make_client(self) -> aetcd.Client:
        ep = self.endpoint
        return aetcd.Client(
            host=ep.host,
            port=ep.port,
            timeout=max(1, round(self.timeout)),
            connect_wait_timeout=max(1, round(self.timeout)),
        )

    async def _client_now(self) -> aetcd.Client:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    async def _call(self, op: Callable[[Any], Awaitable[T]], *, what: str) -> T:
        """Run ``op(client)``; on a transient error fail over through every endpoint once."""
        last: DaprDockrError | None = None
        for _ in range(len(self.endpoints)):
            client = await self._client_now()
            try:
                return await asyncio.wait_for(op(client), timeout=self.timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                err = translate(exc, what=what)
                if not err.transient or isinstance(err, LeaseLostError):
                    raise err from exc
                self.errors += 1
                last = err
                log.warning("etcd %s via %s failed: %s", what, self.endpoint, exc)
                await self.close()
                self._index = (self._index + 1) % len(self.endpoints)
        raise StoreUnavailableError(
            f"etcd unreachable ({what}; last error: {last})",
            endpoints=tuple(str(e) for e in self.endpoints),
        )

    # ------------------------------------------------------------------ raw reads
    async def read_prefix(self, prefix: str) -> tuple[list[RawKV], int]:
        """All key/values under ``prefix`` and the store revision they were read at."""

        async def op(c: aetcd.Client) -> tuple[list[RawKV], int]:
            resp = await c.get_prefix(prefix.encode())
            kvs = [
                RawKV(
                    key=kv.key.decode(errors="replace"),
                    value=kv.value,
                    lease=kv.lease,
                    create_revision=kv.create_revision,
                    mod_revision=kv.mod_revision,
                )
                for kv in resp
            ]
            return kvs, int(resp.header.revision)

        return await self._call(op, what=f"read {prefix}")

    async def snapshot(self) -> ClusterState:
        """The whole cluster state at one revision; malformed keys are logged and skipped."""
        kvs, revision = await self.read_prefix(self.schema.root)
        state = decode_state(self.schema, kvs, revision=revision)
        for key, reason in state.skipped:
            log.warning("skipping malformed etcd key %s: %s", key, reason)
        return state

    # ------------------------------------------------------------------ desired state
    async def put_service(self, spec: ServiceSpec) -> None:
        key = self.schema.service(spec.name).encode()
        await self._call(lambda c: c.put(key, dumps(spec.to_dict())), what="put service")

    async def get_service(self, name: ServiceName) -> ServiceSpec | None:
        """The spec, ``None`` if absent; a malformed stored spec raises ValidationError."""
        key = self.schema.service(name)
        got = await self._call(lambda c: c.get(key.encode()), what="get service")
        if got is None:
            return None
        value = decode_value(self.schema, RawKV(key=key, value=got.value))
        assert isinstance(value, ServiceSpec)
        return value

    async def delete_service(self, name: ServiceName) -> bool:
        key = self.schema.service(name).encode()

        async def op(c: aetcd.Client) -> bool:
            resp = await c.delete(key)
            return resp is not None and int(getattr(resp, "deleted", 1)) > 0

        return await self._call(op, what="delete service")

    # ------------------------------------------------------------------ leases
    async def grant_lease(self, ttl: int) -> int:
        lease = await self._call(lambda c: c.lease(ttl), what="grant lease")
        return int(lease.id)

    async def keepalive(self, lease_id: int) -> int:
        """Refresh the lease; returns the remaining TTL, raises LeaseLostError if it is gone."""
        reply = await self._call(lambda c: c.refresh_lease(lease_id), what="keepalive")
        ttl = int(getattr(reply, "TTL", 0))
        if ttl <= 0:
            raise LeaseLostError(f"lease {lease_id:x} expired")
        return ttl

    async def revoke_lease(self, lease_id: int) -> None:
        await self._call(lambda c: c.revoke_lease(lease_id), what="revoke lease")

    # ------------------------------------------------------------------ nodes and instances
    async def put_node(self, node: NodeRecord, *, lease: int) -> None:
        key = self.schema.node(node.node_id).encode()
        await self._call(lambda c: c.put(key, dumps(node.to_dict()), lease=lease), what="put node")

    def _wrote(self, kind: Literal["put", "delete"], key: bytes, value: bytes, *, revision: int, lease: int = 0,
               create_revision: int = 0) -> None:
        ev = WatchEvent(kind=kind, key=key.decode(errors="replace"), value=value, revision=revision, lease=lease,
                        create_revision=create_revision)
        for listener in self.write_listeners:
            listener(ev)

    async def claim_instance(self, rec: InstanceRecord, *, lease: int) -> int:
        """Create the instance key iff absent, on ``lease``.  Returns its create revision or 0."""
        key = self.schema.instance(rec.service, rec.number).encode()
        value = dumps(rec.to_dict())

        async def op(c: aetcd.Client) -> int:
            ok, responses = await c.transaction(
                compare=[c.transactions.create(key) == 0],
                success=[c.transactions.put(key, value, lease=lease)],
                failure=[],
            )
            if not ok:
                return 0
            revision = _txn_revision(responses)
            self._wrote("put", key, value, revision=revision, lease=lease, create_revision=revision)
            return revision

        return await self._call(op, what="claim instance")

    async def update_instance(self, rec: InstanceRecord, *, lease: int) -> bool:
        """Overwrite our own instance key; False if it is no longer the key we created."""
        key = self.schema.instance(rec.service, rec.number).encode()
        value = dumps(rec.to_dict())

        async def op(c: aetcd.Client) -> bool:
            ok, responses = await c.transaction(
                compare=[c.transactions.create(key) == rec.create_revision],
                success=[c.transactions.put(key, value, lease=lease)],
                failure=[],
            )
            if ok:
                self._wrote("put", key, value, revision=_txn_revision(responses), lease=lease,
                            create_revision=rec.create_revision)
            return bool(ok)

        return await self._call(op, what="update instance")

    async def release_instance(self, rec: InstanceRecord) -> bool:
        """Delete our own instance key (only if it is still the one our claim created)."""
        key = self.schema.instance(rec.service, rec.number).encode()

        async def op(c: aetcd.Client) -> bool:
            ok, responses = await c.transaction(
                compare=[c.transactions.create(key) == rec.create_revision],
                success=[c.transactions.delete(key)],
                failure=[],
            )
            if ok:
                self._wrote("delete", key, b"", revision=_txn_revision(responses))
            return bool(ok)

        return await self._call(op, what="release instance")

    async def put_raw(self, key: str, value: bytes) -> None:
        """Write an arbitrary key (tests and tooling only)."""
        await self._call(lambda c: c.put(key.encode(), value), what="put")

    # ------------------------------------------------------------------ watch
    async def watch(
        self,
        prefix: str | None = None,
        *,
        start_revision: int | None = None,
        max_backoff: float = 5.0,
    ) -> AsyncIterator[WatchEvent]:
        """Events under ``prefix`` (default: the whole schema root), forever.

        Reconnects with jittered exponential backoff; after a reconnect yields ``resync``
        first, then continues from the revision after the last event seen.
        """
        prefix = prefix or self.schema.root
        next_rev = start_revision
        backoff = 0.1
        first = True
        while True:
            watch = None
            try:
                client = await self._client_now()
                watch = await asyncio.wait_for(
                    client.watch_prefix(prefix.encode(), start_revision=next_rev),
                    timeout=self.timeout,
                )
                if not first:
                    yield WatchEvent(kind="resync")
                first = False
                backoff = 0.1
                async for ev in watch:
                    kv = ev.kv
                    rev = int(kv.mod_revision)
                    next_rev = rev + 1
                    kind: Literal["put", "delete"] = (
                        "delete" if str(ev.kind).upper().endswith("DELETE") else "put"
                    )
                    yield WatchEvent(
                        kind=kind,
                        key=kv.key.decode(errors="replace"),
                        value=kv.value,
                        revision=rev,
                        lease=int(kv.lease),
                        create_revision=int(kv.create_revision),
                    )
                raise StoreUnavailableError("watch stream ended")
            except asyncio.CancelledError:
                raise
            except aetcd_exc.RevisionCompactedError as exc:
                log.warning("watch from revision %s compacted; resyncing", next_rev)
                next_rev = None
                first = False
                _ = exc
                yield WatchEvent(kind="resync")
            except Exception as exc:
                err = translate(exc, what="watch")
                self.errors += 1
                log.warning("etcd watch interrupted (%s); reconnecting in %.1fs", err, backoff)
                first = False
                await self.close()
                self._index = (self._index + 1) % len(self.endpoints)
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(max_backoff, backoff * 2)
            finally:
                if watch is not None:
                    try:
                        await asyncio.wait_for(watch.cancel(), timeout=1)
                    except Exception:
                        log.debug("watch cancel failed", exc_info=True)
