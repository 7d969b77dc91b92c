"""Parsing of etcd endpoint lists (``--etcd``, ``-etcd=``, ``DAPRDOCKR_ETCD``).

Accepts the seed's form ``http://localhost:5001,http://localhost:5002`` as well as bare
``host:port`` entries.  Only plain http endpoints are supported (no TLS yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from daprdockr.errors import ValidationError

DEFAULT_ETCD = "http://127.0.0.1:2379"
SEED_DEFAULT_ETCD = "http://localhost:5001,http://localhost:5002,http://localhost:5003"


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"http://{self.host}:{self.port}"


def parse_endpoints(text: str) -> tuple[Endpoint, ...]:
    """``"http://a:1,b:2"`` -> endpoints; raises ValidationError naming the bad entry."""
    result: list[Endpoint] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        url = urlsplit(item if "://" in item else f"http://{item}")
        if url.scheme != "http":
            raise ValidationError(f"{item!r}: only http:// endpoints are supported", field="etcd")
        try:
            port = url.port or 2379
        except ValueError as exc:
            raise ValidationError(f"{item!r}: bad port", field="etcd") from exc
        if not url.hostname or url.path not in ("", "/"):
            raise ValidationError(f"{item!r} is not http://host:port", field="etcd")
        result.append(Endpoint(host=url.hostname, port=port))
    if not result:
        raise ValidationError("no endpoint given", field="etcd")
    return tuple(result)
