"""Detecting this host's IP from a route table file and every IPv4 address of every interface
(``getifaddrs(3)``, so an interface's second and later addresses count too); the rule is
:func:`daprdockr.core.routetable.host_ip`.  Used by ``daprdockrcmd -ip``, ``daprdockrd`` without
``-host`` and ``daprdockr agent`` without ``--advertise-ip``."""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
from pathlib import Path

from daprdockr.core.routetable import host_ip, parse_routes
from daprdockr.errors import ValidationError

DEFAULT_ROUTE_FILE = Path("/proc/net/route")


class _Sockaddr(ctypes.Structure):
    """``struct sockaddr``; for AF_INET, bytes 2..5 of ``data`` are the address (``sin_addr``)."""

    _fields_ = [("family", ctypes.c_ushort), ("data", ctypes.c_ubyte * 14)]


class _Ifaddrs(ctypes.Structure):
    """``struct ifaddrs`` (getifaddrs(3))."""


_Ifaddrs._fields_ = [
    ("next", ctypes.POINTER(_Ifaddrs)), ("name", ctypes.c_char_p), ("flags", ctypes.c_uint),
    ("addr", ctypes.POINTER(_Sockaddr)), ("netmask", ctypes.POINTER(_Sockaddr)),
    ("broadaddr", ctypes.c_void_p), ("data", ctypes.c_void_p),
]


def _ipv4(sa: _Sockaddr) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(bytes(sa.data[2:6]))


def interface_addresses() -> list[tuple[str, ipaddress.IPv4Interface]]:
    """(name, address/prefix) of every IPv4 address of every interface, in the kernel's order
    (an interface's primary address first)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.getifaddrs.argtypes = [ctypes.POINTER(ctypes.POINTER(_Ifaddrs))]
    libc.getifaddrs.restype = ctypes.c_int
    libc.freeifaddrs.argtypes = [ctypes.POINTER(_Ifaddrs)]
    libc.freeifaddrs.restype = None
    head = ctypes.POINTER(_Ifaddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        raise ValidationError(f"cannot list the interfaces' addresses: {os.strerror(ctypes.get_errno())}")
    found = []
    try:
        node = head
        while node:
            ifa = node.contents
            if ifa.addr and ifa.netmask and ifa.name and ifa.addr.contents.family == socket.AF_INET:
                address, mask = _ipv4(ifa.addr.contents), _ipv4(ifa.netmask.contents)
                found.append((ifa.name.decode(errors="replace"), ipaddress.IPv4Interface(f"{address}/{mask}")))
            node = ifa.next
    finally:
        libc.freeifaddrs(head)
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
