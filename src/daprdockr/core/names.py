"""Validation of the names that end up in DNS, etcd keys, container names and nginx config.

Everything here is strict on purpose: a service name becomes an etcd key and a DNS label, an
``http_host`` is written into nginx configuration, so anything outside the documented alphabet is
refused with a :class:`~daprdockr.errors.ValidationError` naming the field.  Every pattern must
match the *whole* string (``fullmatch``): with ``re.match`` and ``$``, a value ending in a newline
would pass (``$`` also matches before a final newline) and could inject nginx configuration.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from daprdockr.errors import ValidationError

_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# Hostname labels for http_host: letters, digits, hyphen; case-insensitive (normalised to lower).
_HOST_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# Docker image reference: [registry[:port]/]path[:tag][@digest], conservative alphabet.
_IMAGE_RE = re.compile(
    r"^(?:[a-z0-9][a-z0-9.-]*(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[a-z0-9]+:[a-f0-9]{32,})?$"
)
# Label namespaces of DaprDockr itself and of Docker (its docs reserve these for its own use).
RESERVED_LABEL_PREFIXES = ("daprdockr.", "com.docker.", "io.docker.", "org.dockerproject.")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


def validate_label(value: object, *, field: str) -> str:
    """Return ``value`` if it is a DNS label: lowercase ``[a-z0-9-]``, 1..63, no edge ``-``."""
    if not isinstance(value, str) or not value:
        raise ValidationError("must be a non-empty string", field=field)
    if len(value) > 63:
        raise ValidationError(f"{value!r} is longer than 63 characters", field=field)
    if not _LABEL_RE.fullmatch(value):
        raise ValidationError(
            f"{value!r} is not a DNS label (lowercase a-z, 0-9 and '-', "
            "not starting or ending with '-')",
            field=field,
        )
    return value


def validate_hostname(value: object, *, field: str = "http_host") -> str:
    """Return the lower-cased hostname, or raise: RFC 1123 labels only, ≤ 253 characters.

    No wildcards, ports, spaces, quotes, semicolons or braces: the result is written verbatim
    into nginx configuration.
    """
    if not isinstance(value, str) or not value:
        raise ValidationError("must be a non-empty string", field=field)
    host = value.lower()
    if host.endswith("."):
        host = host[:-1]
    if len(host) > 253:
        raise ValidationError(f"{value!r} is longer than 253 characters", field=field)
    labels = host.split(".")
    for label in labels:
        if not _HOST_LABEL_RE.fullmatch(label):
            raise ValidationError(
                f"{value!r} is not a valid hostname (labels of a-z, 0-9 and '-', dot-separated)",
                field=field,
            )
    if labels[-1].isdigit():
        raise ValidationError(f"{value!r} is not a hostname (numeric top label)", field=field)
    return host


def validate_image(value: object, *, field: str = "image") -> str:
    """Return ``value`` if it looks like a Docker image reference (``name[:tag][@digest]``)."""
    if not isinstance(value, str) or not value:
        raise ValidationError("is required and must be a non-empty string", field=field)
    if len(value) > 512 or not _IMAGE_RE.fullmatch(value):
        raise ValidationError(f"{value!r} is not a valid image reference", field=field)
    return value


def validate_port(value: object, *, field: str) -> int:
    """Return ``value`` if it is an int TCP port 1..65535 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{value!r} must be an integer port", field=field)
    if not 1 <= value <= 65535:
        raise ValidationError(f"{value} is outside 1..65535", field=field)
    return value


def validate_unicast_ip(value: object, *, field: str) -> str:
    """Return ``value`` if it is one unicast IP address (what a host can advertise and publish on).

    ``0.0.0.0``/``::`` would publish every container port on all interfaces; multicast, broadcast
    and reserved addresses cannot be reached as one host.
    """
    try:
        ip = ipaddress.ip_address(value)  # type: ignore[arg-type]
    except ValueError:
        raise ValidationError(f"{value!r} is not an IP address", field=field) from None
    if ip.is_unspecified or ip.is_multicast or (ip.version == 4 and ip.is_reserved):  # 240/4 and broadcast
        raise ValidationError(f"{value} is not a unicast address of one host", field=field)
    return str(ip)


def validate_env_key(value: object, *, field: str = "env") -> str:
    if not isinstance(value, str) or not _ENV_KEY_RE.fullmatch(value):
        raise ValidationError(f"{value!r} is not a valid environment variable name", field=field)
    return value


def validate_label_key(value: object, *, field: str = "labels") -> str:
    if not isinstance(value, str) or not _LABEL_KEY_RE.fullmatch(value):
        raise ValidationError(f"{value!r} is not a valid label key", field=field)
    reserved = next((p for p in RESERVED_LABEL_PREFIXES if value.startswith(p)), None)
    if reserved is not None:
        raise ValidationError(f"{value!r}: the {reserved}* label namespace is reserved", field=field)
    return value


@dataclass(frozen=True, order=True, slots=True)
class ServiceName:
    """``<service>.<group>`` (the seed's form, e.g. ``web.myapp``)."""

    group: str
    service: str

    @classmethod
    def parse(cls, text: object, *, field: str = "name") -> ServiceName:
        if not isinstance(text, str) or text.count(".") != 1:
            raise ValidationError(
                f"{text!r} must be <service>.<group>, e.g. web.myapp", field=field
            )
        service, group = text.split(".")
        return cls(
            group=validate_label(group, field=f"{field} (group)"),
            service=validate_label(service, field=f"{field} (service)"),
        )

    def __str__(self) -> str:
        return f"{self.service}.{self.group}"


def instance_order(service: ServiceName, number: int) -> tuple[str, int]:
    """The order instances are listed and handled in: by ``<service>.<group>``, then number."""
    return str(service), number


def by_instance(item: tuple[tuple[ServiceName, int], object]) -> tuple[str, int]:
    """:func:`instance_order` of a mapping item keyed by ``(service, number)``."""
    return instance_order(*item[0])
