"""The aetcd internals the etcd adapter cannot do without (aetcd opens only insecure channels and
keeps its gRPC error mapping private): these tests fail when an aetcd release changes them, before
an agent does.  See ``hand_to_aetcd`` in :mod:`daprdockr.adapters.etcd_client` and ``raise_as_aetcd`` in
:mod:`daprdockr.adapters.etcd_errors`."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import aetcd
import aetcd.exceptions as aetcd_exc
import aetcd.rpc as aetcd_rpc
import aetcd.watcher as aetcd_watcher
import grpc
import pytest

from daprdockr.adapters.etcd_client import AETCD_STUBS, aetcd_connected
from daprdockr.adapters.etcd_errors import raise_as_aetcd
from daprdockr.adapters.etcd_store import EtcdStore


def test_a_client_has_the_attributes_its_connect_sets_up() -> None:
    client = aetcd.Client(host="127.0.0.1", port=1)  # (nothing connects)
    for name in (*AETCD_STUBS, "channel", "metadata", "_watcher"):
        assert hasattr(client, name), name
    assert isinstance(client._connected, asyncio.Event) and not aetcd_connected(client)
    assert set(inspect.signature(aetcd_watcher.Watcher).parameters) >= {"timeout", "metadata"}


@pytest.mark.parametrize(("code", "raised"), [
    (grpc.StatusCode.UNAVAILABLE, aetcd_exc.ConnectionFailedError),
    (grpc.StatusCode.DEADLINE_EXCEEDED, aetcd_exc.ConnectionTimeoutError),
    (grpc.StatusCode.FAILED_PRECONDITION, aetcd_exc.PreconditionFailedError),
    (grpc.StatusCode.OUT_OF_RANGE, aetcd_exc.ClientError),
])
def test_grpc_errors_are_raised_as_aetcd_raises_them(code: grpc.StatusCode, raised: type[Exception]) -> None:
    error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="details of it")
    with pytest.raises(raised, match="details of it"):
        raise_as_aetcd(error)


@pytest.mark.etcd
async def test_aetcd_calls_and_direct_calls_share_the_channel_opened_here(store: EtcdStore) -> None:
    async def check(c: Any) -> str:
        assert aetcd_connected(c)
        channel = c.channel
        for name, stub in AETCD_STUBS.items():
            assert isinstance(getattr(c, name), stub), name
        assert isinstance(c._watcher, aetcd_watcher.Watcher)
        await c.put(store.schema.root.encode() + b"/x", b"1")  # aetcd's calls
        got = await c.get(store.schema.root.encode() + b"/x")
        status = await c.unary(lambda s: s.maintenance.Status, aetcd_rpc.StatusRequest())  # ours
        assert c.channel is channel
        return f"{got.value.decode()} {bool(status.version)}"

    assert await store.call(check, what="check") == "1 True"
