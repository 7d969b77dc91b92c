"""Which hosts the cluster orders ACME certificates for, and when.  Pure: no clock, no I/O.

* A host is *wanted* when a service serves its ``http_host`` over HTTPS (``https`` not ``off``).
  Wildcard names are never ordered (HTTP-01 cannot prove them).
* A wanted host needs an order when no certificate covers it (exact name, then the wildcard one
  label up), or when the covering certificate is one ACME issued for that very name and two thirds
  of its lifetime have passed (:func:`renew_at`).  A manual certificate is the operator's: never
  replaced, even expired.
* An order is *due* when the host needs one, no agent holds its lock, and the backoff of its last
  failures has passed (:func:`after_failure`: exponential, capped).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from daprdockr.core.backoff import Backoff
from daprdockr.core.tls import lookup

Reason = Literal["missing", "renew"]
RENEW_AT = 2 / 3  # of the lifetime
# after the n-th consecutive failure: 1 min, 2, 4, ... capped at 6 h (a CA's failed-validation
# limits are per hour; a host that cannot be validated should not use them up)
DEFAULT_RETRY = Backoff(base=60.0, factor=2.0, max_delay=6 * 3600.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldCert:
    """What the planner needs of a stored certificate."""

    source: str  # "manual" | "acme"
    not_before: float
    not_after: float


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderStatus:
    """What the planner needs of a host's order record."""

    failures: int = 0
    next_try: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Need:
    host: str
    reason: Reason


def wanted_hosts(hosts_and_modes: Iterable[tuple[str | None, bool]]) -> frozenset[str]:
    """The names to hold certificates for, from (``http_host``, serves HTTPS) of every service."""
    return frozenset(h.lower() for h, https in hosts_and_modes if h and https and not h.startswith("*."))


def renew_at(*, not_before: float, not_after: float) -> float:
    """When a certificate valid from ``not_before`` to ``not_after`` is renewed: 2/3 of the way."""
    return not_before + (not_after - not_before) * RENEW_AT


def needs(*, wanted: Iterable[str], certs: Mapping[str, HeldCert], now: float) -> list[Need]:
    """The wanted hosts that need an order now, in name order."""
    out: list[Need] = []
    for host in sorted(wanted):
        name = lookup(certs, host)
        if name is None:
            out.append(Need(host=host, reason="missing"))
            continue
        held = certs[name]
        if held.source == "acme" and name == host and now >= renew_at(not_before=held.not_before,
                                                                      not_after=held.not_after):
            out.append(Need(host=host, reason="renew"))
    return out


def due(needed: Iterable[Need], *, orders: Mapping[str, OrderStatus], locked: Collection[str],
        now: float) -> list[Need]:
    """Of ``needed``, what this agent may try now: no lock held, the backoff passed."""
    return [n for n in needed
            if n.host not in locked and (n.host not in orders or orders[n.host].next_try <= now)]


def after_failure(previous: int, *, now: float, retry: Backoff = DEFAULT_RETRY) -> OrderStatus:
    """The order's status after one more failure (``previous`` consecutive ones before)."""
    failures = max(0, previous) + 1
    return OrderStatus(failures=failures, next_try=now + retry.delay(failures))
