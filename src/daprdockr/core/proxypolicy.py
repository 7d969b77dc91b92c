"""How nginx proxies to a service's instances: the spec's ``proxy`` part.  Pure.

``{"balancer": "least-request", "connect_timeout": "5s", "read_timeout": "60s"}``:

* ``balancer``: ``least-request`` (default) sends each request to the instance with the fewest
  requests in flight from this nginx (ties in round-robin order) and skips an instance that has
  had requests in flight without answering any for far longer than it usually takes (a frozen or
  stalled process); ``round-robin`` is the plain rotation of earlier versions.
* ``connect_timeout`` / ``read_timeout``: nginx's per-try limits for this service (defaults: 5 s
  and 60 s, nginx's own).  A try that times out is retried on another instance only for an
  idempotent request (nginx never sends a POST, PATCH or LOCK that reached a backend again).

The default policy is not written into the stored spec (older agents read such specs unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from daprdockr.core.lifecycle import parse_duration
from daprdockr.errors import ValidationError

Balancer = Literal["least-request", "round-robin"]
BALANCERS: tuple[Balancer, ...] = ("least-request", "round-robin")
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyPolicy:
    balancer: Balancer = "least-request"
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT

    FIELDS = frozenset({"balancer", "connect_timeout", "read_timeout"})

    @classmethod
    def parse(cls, value: object) -> ProxyPolicy:
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise ValidationError("must be an object", field="proxy")
        unknown = sorted(set(value) - cls.FIELDS)
        if unknown:
            raise ValidationError(f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: "
                                  f"{', '.join(sorted(cls.FIELDS))}", field="proxy")
        balancer = value.get("balancer", "least-request")
        if balancer not in BALANCERS:
            raise ValidationError(f"{balancer!r} is not one of {', '.join(BALANCERS)}", field="proxy.balancer")
        connect = parse_duration(value.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT),
                                 field="proxy.connect_timeout", maximum=600)
        read = parse_duration(value.get("read_timeout", DEFAULT_READ_TIMEOUT), field="proxy.read_timeout",
                              maximum=86_400)
        if connect < 0.001 or read < 0.001:
            raise ValidationError("timeouts must be at least 1ms", field="proxy")
        return cls(balancer=balancer, connect_timeout=connect, read_timeout=read)

    def to_dict(self) -> dict[str, Any]:
        return {"balancer": self.balancer, "connect_timeout": f"{self.connect_timeout:g}s",
                "read_timeout": f"{self.read_timeout:g}s"}

    def route_options(self) -> tuple[str, ...]:
        """The options nginx's balancer reads in front of a host's peers (``key=value`` tokens;
        none for the defaults, so a route's line is what it was before policies existed)."""
        out: list[str] = []
        if self.balancer != "least-request":
            out.append(f"lb={self.balancer}")
        if self.connect_timeout != DEFAULT_CONNECT_TIMEOUT:
            out.append(f"connect={self.connect_timeout:g}")
        if self.read_timeout != DEFAULT_READ_TIMEOUT:
            out.append(f"read={self.read_timeout:g}")
        return tuple(out)
