"""What the TLS keys in etcd say (:class:`TlsState`): decoded from a full read
(:func:`decode_tls`) and kept per watch event (:func:`apply_event`, copy-on-write: only the
mapping an event touches is copied), the two always equal for the same keys.  A malformed value
is kept in ``bad`` (key -> reason) and never stops the rest: the reader logs it, once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from daprdockr.core.acme_records import AcmeAccount, AcmeChallenge, AcmeLock, AcmeOrder
from daprdockr.core.mirror import WatchEvent
from daprdockr.core.state import RawKV, value_json
from daprdockr.core.tls import CertRecord
from daprdockr.core.tls_keys import ParsedTlsKey, TlsSchema
from daprdockr.errors import ValidationError

__all__ = ["AcmeAccount", "AcmeChallenge", "AcmeLock", "AcmeOrder", "TlsState", "apply_event", "decode_tls"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})
# which TlsState mapping a key kind's values go to (the account is a field of its own)
_TABLE = {"cert": "certs", "challenge": "challenges", "lock": "locks", "order": "orders"}


@dataclass(frozen=True, slots=True)
class TlsState:
    """The TLS keys at ``revision``: certificates by host, HTTP-01 answers by token, order locks
    (host -> node), orders by host, the ACME account, and malformed keys with their reason."""

    certs: Mapping[str, CertRecord] = field(default_factory=lambda: _EMPTY)
    challenges: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # token -> authorization
    locks: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # host -> node
    orders: Mapping[str, AcmeOrder] = field(default_factory=lambda: _EMPTY)
    account: AcmeAccount | None = None
    bad: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # key -> reason
    revision: int = 0


def _decode(parsed: ParsedTlsKey, kv: RawKV) -> object:
    """The value of one key of the schema (the type its kind keeps); raises ValidationError."""
    data = value_json(kv)
    if parsed.kind == "cert":
        return CertRecord.from_dict(data, host=parsed.name)
    if parsed.kind == "challenge":
        return AcmeChallenge.from_dict(data, token=parsed.name).authorization
    if parsed.kind == "lock":
        return AcmeLock.from_dict(data).node
    if parsed.kind == "order":
        return AcmeOrder.from_dict(data)
    return AcmeAccount.from_dict(data)


def decode_tls(schema: TlsSchema, kvs: Iterable[RawKV], *, revision: int = 0) -> TlsState:
    """The state of a full read of ``schema.root``."""
    tables: dict[str, dict[str, Any]] = {name: {} for name in (*_TABLE.values(), "bad")}
    account: AcmeAccount | None = None
    for kv in kvs:
        parsed = schema.parse(kv.key)
        if parsed is None:
            tables["bad"][kv.key] = "key does not match the TLS key schema"
            continue
        try:
            value = _decode(parsed, kv)
        except ValidationError as exc:
            tables["bad"][kv.key] = str(exc)
            continue
        if parsed.kind == "account":
            assert isinstance(value, AcmeAccount)
            account = value
        else:
            tables[_TABLE[parsed.kind]][parsed.name] = value
    return TlsState(**{name: MappingProxyType(table) for name, table in tables.items()},
                    account=account, revision=revision)


def apply_event(state: TlsState, schema: TlsSchema, event: WatchEvent) -> TlsState:
    """``state`` after one watch event (a ``resync`` changes nothing: the caller reads again)."""
    if event.kind == "resync":
        return state
    parsed = schema.parse(event.key)
    changes: dict[str, Any] = {"revision": max(state.revision, event.revision)}
    reason: str | None = None
    if parsed is None:
        reason = None if event.kind == "delete" else "key does not match the TLS key schema"
    else:
        value: object = None
        if event.kind == "put":
            try:
                value = _decode(parsed, event.as_kv())
            except ValidationError as exc:
                reason = str(exc)
        if parsed.kind == "account":
            changes["account"] = value
        else:
            table = _TABLE[parsed.kind]
            changes[table] = _with(getattr(state, table), parsed.name, value)
    if reason is not None or event.key in state.bad:
        changes["bad"] = _with(state.bad, event.key, reason)
    return replace(state, **changes)


def _with(table: Mapping[str, Any], key: str, value: object) -> Mapping[str, Any]:
    """A copy of ``table`` with ``key`` set to ``value`` (removed when ``None``); ``table`` itself
    when nothing changes."""
    if value is None and key not in table:
        return table
    copy = dict(table)
    if value is None:
        del copy[key]
    else:
        copy[key] = value
    return MappingProxyType(copy)
