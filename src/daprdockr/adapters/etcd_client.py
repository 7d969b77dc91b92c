"""The aetcd client with the gRPC channel opened here (aetcd opens only insecure ones): TLS,
etcd's user/password auth, our channel options and the ``hasleader`` metadata on every call; and
etcd's gRPC stubs for the calls aetcd has no method for."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aetcd
import aetcd.rpc as aetcd_rpc
import aetcd.watcher as aetcd_watcher
import grpc

from daprdockr.core.endpoints import Endpoint, EtcdSecurity
from daprdockr.errors import StoreAccessError, ValidationError

T = TypeVar("T")

# Every call: a member without a leader answers "no leader" at once instead of hanging.
REQUIRE_LEADER: tuple[tuple[str, str], ...] = (("hasleader", "true"),)
CHANNEL_OPTIONS = {"grpc.max_receive_message_length": 64 * 1024 * 1024}
# The watch stream: gRPC pings find a hung member (etcd refuses pings closer than 5 s apart).
KEEPALIVE_OPTIONS = {"grpc.keepalive_time_ms": 10_000, "grpc.keepalive_timeout_ms": 3_000,
                     "grpc.http2.max_pings_without_data": 0}


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


class EtcdClient(aetcd.Client):  # type: ignore[misc]
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
