"""The ACME records kept under ``<prefix>-tls/acme/`` (:mod:`daprdockr.core.tls_keys`): the
account (:class:`AcmeAccount`), a host's order lock (:class:`AcmeLock`), the state of a host's
newest order with its failures and backoff (:class:`AcmeOrder`), and an HTTP-01 challenge answer
(:class:`AcmeChallenge`).  Each ``from_dict`` checks its fields (ValidationError naming the field);
unknown fields are ignored, so newer writers may add some."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from daprdockr.core.jsondata import require_mapping
from daprdockr.core.tls import validate_cert_host
from daprdockr.errors import ValidationError

OrderState = Literal["ordering", "valid", "failed"]
ORDER_STATES: frozenset[str] = frozenset({"ordering", "valid", "failed"})
MAX_TEXT = 4096  # a URL, an e-mail address, an error message
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


def _text(d: Mapping[str, Any], name: str, *, required: bool = True, limit: int = MAX_TEXT) -> str:
    value = d.get(name, None if required else "")
    if not isinstance(value, str) or (required and not value):
        raise ValidationError("must be a non-empty string" if required else "must be a string", field=name)
    if len(value) > limit:
        raise ValidationError(f"{len(value)} characters, at most {limit}", field=name)
    return value


def _number(d: Mapping[str, Any], name: str, *, default: float | None = None) -> float:
    value = d.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError("must be a number", field=name)
    return float(value)


@dataclass(frozen=True, slots=True)
class AcmeAccount:
    """The cluster's ACME account: the directory it is registered with, its key (JWK JSON) and URL."""

    directory: str
    email: str
    key: str  # the account key as JWK JSON (josepy's json_dumps)
    uri: str  # the account's URL at the CA ("" until registered)

    def to_dict(self) -> dict[str, Any]:
        return {"directory": self.directory, "email": self.email, "key": self.key, "uri": self.uri}

    @classmethod
    def from_dict(cls, data: object) -> AcmeAccount:
        d = require_mapping(data, what="ACME account")
        return cls(directory=_text(d, "directory"), email=_text(d, "email", required=False),
                   key=_text(d, "key", limit=16384), uri=_text(d, "uri", required=False))


@dataclass(frozen=True, slots=True)
class AcmeLock:
    """The agent ordering a host's certificate (the key is on its lease)."""

    node: str
    since: float

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "since": self.since}

    @classmethod
    def from_dict(cls, data: object) -> AcmeLock:
        d = require_mapping(data, what="ACME lock")
        return cls(node=_text(d, "node", limit=253), since=_number(d, "since"))


@dataclass(frozen=True, slots=True)
class AcmeOrder:
    """The newest order of a host's certificate: its state, failures and when to try again."""

    node: str
    state: OrderState
    order_url: str = ""
    failures: int = 0
    last_error: str = ""
    next_try: float = 0.0
    updated: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "state": self.state, "order_url": self.order_url, "failures": self.failures,
                "last_error": self.last_error, "next_try": self.next_try, "updated": self.updated}

    @classmethod
    def from_dict(cls, data: object) -> AcmeOrder:
        d = require_mapping(data, what="ACME order")
        state = d.get("state")
        if state not in ORDER_STATES:
            raise ValidationError(f"{state!r} is not one of {', '.join(sorted(ORDER_STATES))}", field="state")
        failures = d.get("failures", 0)
        if isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
            raise ValidationError("must be a non-negative integer", field="failures")
        return cls(node=_text(d, "node", limit=253), state=state, order_url=_text(d, "order_url", required=False),
                   failures=failures, last_error=_text(d, "last_error", required=False),
                   next_try=_number(d, "next_try", default=0.0), updated=_number(d, "updated", default=0.0))


@dataclass(frozen=True, slots=True)
class AcmeChallenge:
    """An HTTP-01 answer: nginx answers ``/.well-known/acme-challenge/<token>`` with ``authorization``
    (``<token>.<account key thumbprint>``, RFC 8555 8.1)."""

    token: str
    host: str
    authorization: str

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "authorization": self.authorization}

    @classmethod
    def from_dict(cls, data: object, *, token: str) -> AcmeChallenge:
        d = require_mapping(data, what="ACME challenge")
        host = validate_cert_host(d.get("host"), field="host")
        authorization = _text(d, "authorization", limit=600)
        first, dot, thumbprint = authorization.partition(".")
        if first != token or not dot or not _B64URL_RE.fullmatch(thumbprint):
            raise ValidationError("must be '<token>.<thumbprint>' for this key's token", field="authorization")
        return cls(token=token, host=host, authorization=authorization)
