"""etcd errors as the project's: aetcd/grpc/OS exceptions become :mod:`daprdockr.errors` types,
marked transient (fail over, retry) or terminal; raw gRPC errors of the calls made on etcd's stubs
directly are first raised as aetcd raises them."""

from __future__ import annotations

import asyncio

import aetcd.exceptions as aetcd_exc
import grpc

from daprdockr.core.etcd_health import FIX as SPACE_FIX
from daprdockr.errors import (
    DaprDockrError,
    LeaseLostError,
    StoreAccessError,
    StoreError,
    StoreFullError,
    StoreRefusedError,
    StoreUnavailableError,
)

_TRANSIENT = (
    aetcd_exc.ConnectionFailedError,
    aetcd_exc.ConnectionTimeoutError,
    aetcd_exc.InternalError,
    asyncio.TimeoutError,
    ConnectionError,
    OSError,
)


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


def raise_as_aetcd(exc: grpc.aio.AioRpcError) -> None:
    """Raise the aetcd exception aetcd's own calls raise for ``exc`` (what :func:`translate` knows),
    for the calls made on gRPC stubs directly.  aetcd keeps its mapping private: this is the one
    place that uses it (tests/adapters/test_aetcd_internals.py fails if aetcd changes it)."""
    aetcd_exc._handle_exception(exc)
