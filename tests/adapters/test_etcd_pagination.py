"""Paginated range reads: the range helpers, and reads against a real etcd (over the 64 MiB gRPC
receive limit; writes and compactions between pages)."""

from __future__ import annotations

import itertools
import time
from typing import Any

import aetcd.exceptions as aetcd_exc
import aetcd.utils
import pytest

from daprdockr.adapters.etcd_client import CHANNEL_OPTIONS
from daprdockr.adapters.etcd_reads import (
    MAX_PAGE_KEYS,
    PAGE_BYTES,
    PAGE_KEYS,
    _Page,
    next_key,
    next_page_keys,
    range_end,
)
from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.jsondata import MAX_RECORD_BYTES
from daprdockr.core.keys import KeySchema
from daprdockr.errors import StoreError

BIG_KEYS = 2200
BIG_VALUE = 31 * 1024  # 2 200 x 31 KiB = 68.2 MiB: over the client's 64 MiB receive limit in one response


# ---------------------------------------------------------------------------------------- helpers (pure)
def test_range_end_increments_the_last_byte_below_0xff() -> None:
    assert range_end(b"/d/instances/") == b"/d/instances0"
    assert range_end(b"a\xff") == b"b"
    assert range_end(b"a\xfe\xff\xff") == b"a\xff"
    assert range_end(b"\xff\xff") == b"\0" and range_end(b"") == b"\0"  # no end: every key from the start
    assert next_key(b"/d/k") == b"/d/k\0"


def test_range_end_covers_exactly_the_keys_with_the_prefix() -> None:
    alphabet = [b"\x00", b"\x01", b"a", b"\xfe", b"\xff"]
    words = [b"".join(p) for n in range(4) for p in itertools.product(alphabet, repeat=n)]
    for prefix in (w for w in words if w):
        end = range_end(prefix)
        if end != b"\0" and not prefix.endswith(b"\xff"):  # (aetcd's keeps a trailing 0xff: an empty range)
            assert end == aetcd.utils.prefix_range_end(prefix)
        for key in words:
            inside = prefix <= key and (end == b"\0" or key < end)
            assert inside == key.startswith(prefix), (prefix, end, key)


def test_a_page_of_the_largest_valid_records_fits_the_receive_limit() -> None:
    per_key = MAX_RECORD_BYTES + 512  # a value, its key (at most a few hundred bytes) and the framing
    assert PAGE_KEYS * per_key < CHANNEL_OPTIONS["grpc.max_receive_message_length"]


def test_pages_after_the_first_are_sized_by_the_largest_key_and_value_of_the_one_before() -> None:
    assert next_page_keys(300) == PAGE_BYTES // 300  # typical instance records: ~7 000 keys
    assert next_page_keys(10) == next_page_keys(0) == MAX_PAGE_KEYS
    assert next_page_keys(MAX_RECORD_BYTES + 512) == next_page_keys(10 * 2**20) == PAGE_KEYS  # never fewer
    assert CHANNEL_OPTIONS["grpc.max_receive_message_length"] > MAX_PAGE_KEYS * 300


def test_the_next_key_is_the_smallest_one_after_the_last() -> None:
    words = sorted(b"".join(p) for n in range(4) for p in itertools.product([b"\x00", b"a", b"\xff"], repeat=n))
    for i, last in enumerate(words[:-1]):
        after = next_key(last)
        assert last < after and all(w >= after for w in words[i + 1:]), last


# ---------------------------------------------------------------------------------------- real etcd
def _record_pages(store: EtcdStore, monkeypatch: pytest.MonkeyPatch,
                  between: Any = None) -> list[dict[str, Any]]:
    """Wrap the store's Range calls: every request is recorded; ``between(n)`` runs after page n."""
    calls: list[dict[str, Any]] = []
    real = store._range_page
    inside = False  # the reads ``between`` makes are not recorded

    async def page(c: Any, **kw: Any) -> _Page:
        nonlocal inside
        if inside:
            return await real(c, **kw)
        call: dict[str, Any] = {**kw, "keys": None}  # (None: the call failed)
        calls.append(call)
        got = await real(c, **kw)
        call.update(keys=len(got.kvs), more=got.more)
        if between is not None:
            inside = True
            try:
                await between(len(calls))
            finally:
                inside = False
        return got

    monkeypatch.setattr(store, "_range_page", page)
    return calls


async def _put_many(store: EtcdStore, items: dict[str, bytes]) -> None:
    """Transactions of at most 40 puts (each below etcd's 1.5 MiB request limit)."""
    keys = list(items)
    for i in range(0, len(keys), 40):
        await store.transaction(compares=[], ops=[(k, items[k], 0) for k in keys[i:i + 40]], what="fill")


async def _delete_all(store: EtcdStore, prefix: str) -> None:
    await store._call(lambda c: c.delete_prefix(prefix.encode()), what="clean up")


@pytest.mark.etcd
async def test_a_prefix_over_the_grpc_receive_limit_is_read_whole_in_pages(
    store: EtcdStore, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = f"{prefix}/instances/big/load/"
    items = {f"{root}{i}": f"{i:06d}".encode() * (BIG_VALUE // 6) for i in range(BIG_KEYS)}
    total = sum(len(k) + len(v) for k, v in items.items())
    assert total > CHANNEL_OPTIONS["grpc.max_receive_message_length"]
    try:
        t0 = time.monotonic()
        await _put_many(store, items)
        written = time.monotonic() - t0
        _, newest = await store.read_prefix(f"{prefix}/none/")

        with pytest.raises(StoreError, match="larger than max"):  # the read before pagination: one response
            await store._call(lambda c: c.get_prefix(root.encode()), what="one range")

        calls = _record_pages(store, monkeypatch)
        t0 = time.monotonic()
        kvs, revision = await store.read_prefix(root)
        took = time.monotonic() - t0
        assert revision == newest and len(kvs) == BIG_KEYS
        assert {kv.key: kv.value for kv in kvs} == items
        assert [kv.key for kv in kvs] == sorted(items) and max(kv.mod_revision for kv in kvs) <= revision
        sizes = [min(PAGE_KEYS, BIG_KEYS - n) for n in range(0, BIG_KEYS, PAGE_KEYS)]  # (1000, 1000, 200)
        assert [(c["revision"], c["keys"]) for c in calls] == [(0, sizes[0])] + [(revision, k) for k in sizes[1:]]
        print(f"\n{BIG_KEYS} keys, {total / 2**20:.1f} MiB: written in {written:.1f}s, "
              f"read in {len(calls)} pages in {took:.2f}s")
        assert await store.keys_under(root) == sorted(items)

        calls.clear()  # a page over the limit is asked again with half as many keys
        t0 = time.monotonic()
        kvs, _ = await store.read_prefix(root, page_keys=BIG_KEYS)
        print(f"one page of {BIG_KEYS} asked: {[c['limit'] for c in calls]} keys per page, "
              f"{time.monotonic() - t0:.2f}s")
        assert {kv.key: kv.value for kv in kvs} == items
        assert [(c["limit"], c["keys"]) for c in calls] == [(BIG_KEYS, None)] + [(BIG_KEYS // 2, BIG_KEYS // 2)] * 2
    finally:
        await _delete_all(store, root)


@pytest.mark.etcd
async def test_pages_of_small_values_grow_after_the_first(
    store: EtcdStore, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = f"{prefix}/instances/app/small/"
    items = {f"{root}{i}": b"x" * 200 for i in range(2 * PAGE_KEYS + 500)}
    try:
        await _put_many(store, items)
        calls = _record_pages(store, monkeypatch)
        kvs, _ = await store.read_prefix(root)
        assert {kv.key: kv.value for kv in kvs} == items
        grown = next_page_keys(len(f"{root}1000") + 200)
        assert [(c["limit"], c["keys"]) for c in calls] == [(PAGE_KEYS, PAGE_KEYS), (grown, len(items) - PAGE_KEYS)]
    finally:
        await _delete_all(store, root)


@pytest.mark.etcd
async def test_writes_between_pages_are_not_seen(
    store: EtcdStore, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = f"{prefix}/instances/app/web/"
    items = {f"{root}{i}": f"v{i}".encode() for i in range(1, 36)}
    await _put_many(store, items)
    wrote: list[int] = []

    async def write_after_the_first_page(n: int) -> None:
        if n == 1:  # on pages not read yet: a change, a deletion, new keys in between and at the end
            await store.put_raw(f"{root}9", b"changed")
            await store._call(lambda c: c.delete(f"{root}8".encode()), what="delete")
            await store.put_raw(f"{root}77", b"new")
            await store.put_raw(f"{root}99", b"new")
            wrote.append((await store.read_prefix(f"{prefix}/none/"))[1])

    calls = _record_pages(store, monkeypatch, between=write_after_the_first_page)
    kvs, revision = await store.read_prefix(root, page_keys=10)
    assert {kv.key: kv.value for kv in kvs} == items, "the state at the first page's revision"
    assert wrote and wrote[0] > revision
    assert [c["revision"] for c in calls] == [0] + [revision] * (len(calls) - 1) and len(calls) == 4
    assert [c["key"] for c in calls[1:]] == [next_key(k.encode()) for k in sorted(items)[9:30:10]]
    now, _ = await store.read_prefix(root, page_keys=10)
    assert {kv.key for kv in now} == set(items) - {f"{root}8"} | {f"{root}77", f"{root}99"}
    assert await store.keys_under(root, page_keys=3) == sorted(kv.key for kv in now)


@pytest.mark.etcd
async def test_a_read_whose_revision_is_compacted_between_pages_starts_over(
    store: EtcdStore, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = f"{prefix}/instances/app/web/"
    items = {f"{root}{i}": b"1" for i in range(1, 26)}
    await _put_many(store, items)

    async def compact_after_the_first_page(n: int) -> None:
        if n == 1:
            await store.put_raw(f"{root}5", b"2")
            _, rev = await store.read_prefix(f"{prefix}/none/")
            await store._call(lambda c: c.compact(rev), what="compact")

    calls = _record_pages(store, monkeypatch, between=compact_after_the_first_page)
    kvs, revision = await store.read_prefix(root, page_keys=10)
    assert {kv.key: kv.value for kv in kvs} == {**items, f"{root}5": b"2"}, "read again at a new revision"
    compacted = calls[1]["revision"]
    assert [(c["revision"], c["keys"]) for c in calls] == [
        (0, 10), (compacted, None), (0, 10), (revision, 10), (revision, 5)]
    assert 0 < compacted < revision


@pytest.mark.etcd
async def test_a_failover_between_pages_goes_on_at_the_pinned_revision(
    etcd_endpoints: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    eps = parse_endpoints(f"{etcd_endpoints},{etcd_endpoints}")  # the "next member" is the same one
    async with EtcdStore(endpoints=eps, schema=KeySchema(prefix), timeout=2.0) as store:
        root = f"{prefix}/nodes/"
        items = {f"{root}n{i:02d}": b"1" for i in range(25)}
        await _put_many(store, items)
        calls: list[int] = []
        real = store._range_page

        async def fail_the_second_page_once(c: Any, **kw: Any) -> _Page:
            calls.append(kw["revision"])
            if len(calls) == 2:
                await store.put_raw(f"{root}n05", b"2")
                raise aetcd_exc.ConnectionFailedError("injected: the member went away")
            return await real(c, **kw)

        monkeypatch.setattr(store, "_range_page", fail_the_second_page_once)
        kvs, revision = await store.read_prefix(root, page_keys=10)
        assert {kv.key: kv.value for kv in kvs} == items and store.errors == 1
        assert calls == [0, revision, revision, revision]
        assert store._index == 1, "the pages after the failure went to the next endpoint"
