"""The host's IP from its routing table, as the original DaprDockr found it.  Pure.

``/proc/net/route`` lists IPv4 routes: interface, destination, gateway, flags, ..., mask, each
address as 8 hex digits in host byte order (little-endian on the machines this runs on).  A
default route has destination 0.0.0.0 and the gateway flag.  The host's IP is the address of the
interface whose subnet holds a default route's gateway (the original's rule); the caller gives the
interfaces' addresses and masks.
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
        return (int(self.destination) == 0 and int(self.mask) == 0 and bool(self.flags & RTF_UP)
                and bool(self.flags & RTF_GATEWAY))


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
    """The address of the interface whose subnet holds a default gateway (lowest metric first)."""
    ifaces = list(interfaces)
    defaults = sorted((r for r in routes if r.is_default), key=lambda r: r.metric)
    if not defaults:
        raise ValidationError("the routing table has no default route")
    for route in defaults:
        for _name, iface in ifaces:
            if route.gateway in iface.network and not iface.ip.is_loopback:
                return str(iface.ip)
    gateways = ", ".join(str(r.gateway) for r in defaults)
    raise ValidationError(f"no interface has an address in the subnet of the default gateway ({gateways})")
