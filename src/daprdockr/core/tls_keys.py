"""The etcd key schema of TLS data, under a prefix of its own beside the cluster's (for the
prefix ``/daprdockr``: ``/daprdockr-tls/``), so agents of earlier versions, which read every key
under ``/daprdockr/``, never see these, and etcd RBAC can give the private keys to agents only::

    <prefix>-tls/certs/<host>              CertRecord (JSON; host lower-case, a wildcard is *.example.com)
    <prefix>-tls/acme/account              AcmeAccount: the ACME account and its key (JSON)
    <prefix>-tls/acme/locks/<host>         {"node", "since"}: the agent ordering host's certificate, on its lease
    <prefix>-tls/acme/orders/<host>        AcmeOrder: the state of host's newest order, its failures and backoff
    <prefix>-tls/acme/challenges/<token>   {"host", "authorization"}: an HTTP-01 answer, on the orderer's lease

:meth:`TlsSchema.parse` turns a key back into what it names, ``None`` for anything else."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from daprdockr.core.keys import DEFAULT_PREFIX, KeySchema
from daprdockr.core.tls import validate_cert_host
from daprdockr.errors import ValidationError

TlsKeyKind = Literal["cert", "account", "lock", "order", "challenge"]
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")  # an ACME token: base64url (RFC 8555 8.3)


def validate_token(value: object, *, field: str = "token") -> str:
    if not isinstance(value, str) or not _TOKEN_RE.fullmatch(value):
        raise ValidationError(f"{value!r} is not an ACME token (1 to 256 base64url characters)", field=field)
    return value


@dataclass(frozen=True, slots=True)
class ParsedTlsKey:
    kind: TlsKeyKind
    name: str = ""  # the host (cert, lock, order) or the token (challenge); "" for the account


@dataclass(frozen=True, slots=True)
class TlsSchema:
    prefix: str = DEFAULT_PREFIX  # the cluster's prefix (KeySchema.prefix): the TLS root is prefix + "-tls/"

    def __post_init__(self) -> None:
        KeySchema(self.prefix)  # (the same rules)

    @property
    def root(self) -> str:
        return self.prefix + "-tls/"

    @property
    def certs_prefix(self) -> str:
        return self.root + "certs/"

    @property
    def challenges_prefix(self) -> str:
        return self.root + "acme/challenges/"

    @property
    def orders_prefix(self) -> str:
        return self.root + "acme/orders/"

    @property
    def account(self) -> str:
        return self.root + "acme/account"

    def cert(self, host: str) -> str:
        return self.certs_prefix + host

    def lock(self, host: str) -> str:
        return self.root + "acme/locks/" + host

    def order(self, host: str) -> str:
        return self.orders_prefix + host

    def challenge(self, token: str) -> str:
        return self.challenges_prefix + token

    def parse(self, key: str) -> ParsedTlsKey | None:
        """What ``key`` names, or ``None`` if it is not a well-formed key of this schema (a host
        must be written as validate_cert_host writes it: lower-case, no trailing dot)."""
        if not key.startswith(self.root):
            return None
        parts = key[len(self.root):].split("/")
        try:
            if parts[0] == "certs" and len(parts) == 2:
                return _named("cert", parts[1], validate_cert_host(parts[1]))
            if parts[0] == "acme" and len(parts) == 2 and parts[1] == "account":
                return ParsedTlsKey(kind="account")
            if parts[0] == "acme" and len(parts) == 3:
                if parts[1] == "challenges":
                    return ParsedTlsKey(kind="challenge", name=validate_token(parts[2]))
                if parts[1] in ("locks", "orders"):
                    return _named("lock" if parts[1] == "locks" else "order", parts[2], validate_cert_host(parts[2]))
        except ValidationError:
            return None
        return None


def _named(kind: TlsKeyKind, raw: str, host: str) -> ParsedTlsKey | None:
    return ParsedTlsKey(kind=kind, name=host) if raw == host else None
