"""The host's IP from its routing table, as the original DaprDockr found it.  Pure.

``/proc/net/route`` lists IPv4 routes: interface, destination, gateway, flags, ..., mask, each
address as 8 hex digits in host byte order (little-endian on the machines this runs on).  A
default route has destination and mask 0.0.0.0 and is up.  The host's IP (the original's rule) is
an address of the default route's own interface whose subnet holds the route's gateway; every
address of the interface counts, not only its first.  Default routes are tried lowest metric
first.  A default route without a gateway (``default dev ppp0``) gives its interface's first
address.  Failing both, an address of another interface whose subnet holds a default gateway.
Loopback addresses never count.  The caller gives every interface address with its prefix.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from daprdockr.errors import ValidationError

RTF_UP, RTF_GATEWAY = 0x1, 0x2


@dataclass(frozen=True, slots=True)
class Route:
    iface: str
    destination: ipaddress.IPv4Address
    gateway: ipaddress.IPv4Address
    flags: int
    mask: ipaddress.IPv4Address
    metric: int = 0

    @property
    def is_default(self) -> bool:
        return int(self.destination) == 0 and int(self.mask) == 0 and bool(self.flags & RTF_UP)

    @property
    def has_gateway(self) -> bool:
        return bool(self.flags & RTF_GATEWAY) and int(self.gateway) != 0


def _addr(hex_le: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(struct.pack("<I", int(hex_le, 16)))


def parse_routes(text: str) -> list[Route]:
    """The routes of a ``/proc/net/route`` table; a malformed table is a ValidationError."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0][:3] != ["Iface", "Destination", "Gateway"]:
        raise ValidationError("not a /proc/net/route table (no Iface/Destination/Gateway header)")
    routes = []
    for fields in lines[1:]:
        try:
            routes.append(Route(iface=fields[0], destination=_addr(fields[1]), gateway=_addr(fields[2]),
                                flags=int(fields[3], 16), metric=int(fields[6]), mask=_addr(fields[7])))
        except (IndexError, ValueError) as exc:
            raise ValidationError(f"malformed route line {' '.join(fields)!r}") from exc
    return routes


def host_ip(routes: Iterable[Route], interfaces: Iterable[tuple[str, ipaddress.IPv4Interface]]) -> str:
    """This host's address by the rule above; a ValidationError says why there is none."""
    ifaces = [(name, iface) for name, iface in interfaces if not iface.ip.is_loopback]
    defaults = sorted((r for r in routes if r.is_default), key=lambda r: r.metric)
    if not defaults:
        raise ValidationError("the routing table has no default route")
    for route in defaults:
        own = [iface for name, iface in ifaces if name == route.iface]
        if not route.has_gateway and own:
            return str(own[0].ip)
        for iface in own:
            if route.gateway in iface.network:
                return str(iface.ip)
    for route in (r for r in defaults if r.has_gateway):
        for _name, iface in ifaces:
            if route.gateway in iface.network:
                return str(iface.ip)
    gateways = ", ".join(f"{r.gateway} on {r.iface}" for r in defaults)
    raise ValidationError(f"no interface has an address in the subnet of the default gateway ({gateways})")
