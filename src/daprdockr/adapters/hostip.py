"""Detecting this host's IP from a route table file and the interfaces' IPv4 addresses
(``SIOCGIFADDR``/``SIOCGIFNETMASK``); the rule is :func:`daprdockr.core.routetable.host_ip`.
Used by ``daprdockrcmd -ip``, ``daprdockrd`` without ``-host`` and ``daprdockr agent`` without
``--advertise-ip``."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from pathlib import Path

from daprdockr.core.routetable import host_ip, parse_routes
from daprdockr.errors import ValidationError

DEFAULT_ROUTE_FILE = Path("/proc/net/route")
_SIOCGIFADDR, _SIOCGIFNETMASK = 0x8915, 0x891B


def _ioctl_addr(sock: socket.socket, request: int, name: str) -> ipaddress.IPv4Address:
    packed = struct.pack("256s", name.encode()[:15])
    return ipaddress.IPv4Address(fcntl.ioctl(sock.fileno(), request, packed)[20:24])


def interface_addresses() -> list[tuple[str, ipaddress.IPv4Interface]]:
    """(name, address/prefix) of every interface that has an IPv4 address."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                addr = _ioctl_addr(sock, _SIOCGIFADDR, name)
                mask = _ioctl_addr(sock, _SIOCGIFNETMASK, name)
            except OSError:  # no IPv4 address
                continue
            found.append((name, ipaddress.IPv4Interface(f"{addr}/{mask}")))
    return found


def detect_host_ip(route_file: Path = DEFAULT_ROUTE_FILE) -> str:
    """This host's IP by the original's rule; a ValidationError says why it could not be found."""
    try:
        text = route_file.read_text()
    except OSError as exc:
        raise ValidationError(f"cannot read the route table {route_file}: {exc.strerror}") from None
    try:
        return host_ip(parse_routes(text), interface_addresses())
    except ValidationError as exc:
        raise ValidationError(f"cannot detect the host IP from {route_file}: {exc}") from None
