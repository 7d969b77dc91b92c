"""Range reads in pages (:meth:`EtcdReads.read_prefix`, ``keys_under``, ``snapshot``, ``snapshot_of``),
every page after the first pinned to the first one's revision: however many keys there are, no
response passes gRPC's receive limit (a page that does, of oversized garbage values, is asked again
with half as many keys), and the pages still make one consistent state.  The first page has
``PAGE_KEYS`` keys; each next one as many as fit ``PAGE_BYTES`` at the largest key and value of the
page before (``PAGE_KEYS`` to ``MAX_PAGE_KEYS``): etcd counts every key left in the range for each
page, so many small pages cost time quadratic in the keys (BENCHMARKS.md, "Scale: the cost of one
event at 1k, 10k and 100k instances").  Not larger: a page is one call, which must stay well within
the call's timeout on a loaded machine too.  aetcd 1.0 cannot set a Range request's ``limit`` or
``revision``, so these calls go to etcd's gRPC KV API directly (with the client's stub, channel,
auth token and ``hasleader`` metadata)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import aetcd.rpc as aetcd_rpc
import grpc

from daprdockr.adapters.etcd_client import EtcdClient
from daprdockr.adapters.etcd_errors import raise_as_aetcd
from daprdockr.adapters.etcd_pool import EtcdPool
from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState, RawKV, decode_state
from daprdockr.errors import StoreError

log = logging.getLogger(__name__)

# Keys of the first Range request of a read, and the fewest of any later one: even records of
# MAX_RECORD_BYTES (64 KiB) keep such a page under the 64 MiB receive limit.
PAGE_KEYS = 1000
# Later pages are sized to about PAGE_BYTES at the largest key and value of the page before
# (typical instance records, ~300 bytes: ~7 000 keys), at most MAX_PAGE_KEYS keys.
PAGE_BYTES = 2 * 1024 * 1024
MAX_PAGE_KEYS = 8192
READ_RESTARTS = 3  # a paginated read whose pinned revision was compacted starts over at most this often


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


class EtcdReads(EtcdPool):
    """Paged, consistent range reads and single-key reads."""

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
        self, c: EtcdClient, *, key: bytes, end: bytes, revision: int, limit: int, keys_only: bool,
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

    async def newest_write_under(self, prefix: str) -> tuple[int, int]:
        """``(newest, now)``: the highest ``mod_revision`` of a key under ``prefix`` (0 if none)
        and the store's revision, in one Range request (keys only, sorted by mod revision, one
        key).  A reader of an agent's mirror asks it to be at least at ``newest`` (its puts; a
        delete leaves no key to tell its revision)."""
        start, end = prefix_range(prefix)
        request = aetcd_rpc.RangeRequest(key=start, range_end=end, limit=1, keys_only=True,
                                         sort_order=aetcd_rpc.RangeRequest.DESCEND,
                                         sort_target=aetcd_rpc.RangeRequest.MOD)

        async def newest(c: EtcdClient) -> tuple[int, int]:
            try:
                resp = await c.unary(lambda s: s.kv.Range, request)
            except grpc.aio.AioRpcError as exc:
                raise_as_aetcd(exc)
                raise
            return (int(resp.kvs[0].mod_revision) if resp.kvs else 0), int(resp.header.revision)

        return await self._call(newest, what=f"newest write under {prefix}")

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

    async def get_kv(self, key: str) -> RawKV | None:
        """One key's value and revisions, ``None`` if it is absent."""
        got = await self._call(lambda c: c.get(key.encode()), what="get")
        return None if got is None else raw_kv(got)
