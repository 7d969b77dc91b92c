"""Parsing of etcd endpoint lists (``--etcd``, ``-etcd=``, ``DAPRDOCKR_ETCD``).

Accepts the seed's form ``http://localhost:5001,http://localhost:5002`` as well as bare
``host:port`` entries and ``https://`` endpoints (TLS, see :class:`EtcdSecurity`).  Credentials
in a URL (``http://user:pw@host``) are refused: a password on a command line is visible in
``ps``; give ``--etcd-user`` and the password from a file or the environment instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from daprdockr.errors import ValidationError

DEFAULT_ETCD = "http://127.0.0.1:2379"
SEED_DEFAULT_ETCD = "http://localhost:5001,http://localhost:5002,http://localhost:5003"


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    tls: bool = False

    def __str__(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class EtcdSecurity:
    """How to reach a secured etcd: TLS files (PEM) and a user for etcd's auth.

    ``cacert`` verifies the server (default: the system's roots); ``cert``/``key`` authenticate
    this client (etcd ``--client-cert-auth``).  ``password`` never comes from a flag.
    """

    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValidationError("give both --etcd-cert and --etcd-key, or neither", field="etcd")
        if self.user is not None and not self.password:
            raise ValidationError(f"etcd user {self.user!r} needs a password (--etcd-password-file or "
                                  "DAPRDOCKR_ETCD_PASSWORD)", field="etcd")
        if self.password and self.user is None:
            raise ValidationError("an etcd password was given without --etcd-user", field="etcd")


def parse_endpoints(text: str) -> tuple[Endpoint, ...]:
    """``"http://a:1,b:2"`` -> endpoints; raises ValidationError naming the bad entry."""
    result: list[Endpoint] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        url = urlsplit(item if "://" in item else f"http://{item}")
        if url.scheme not in ("http", "https"):
            raise ValidationError(f"{item!r}: only http:// and https:// endpoints are supported", field="etcd")
        if url.username is not None or url.password is not None:
            raise ValidationError(f"endpoint {url.scheme}://{url.hostname}: credentials in the URL are not accepted; "
                                  "give --etcd-user and the password from a file or DAPRDOCKR_ETCD_PASSWORD",
                                  field="etcd")
        try:
            port = url.port or 2379
        except ValueError as exc:
            raise ValidationError(f"{item!r}: bad port", field="etcd") from exc
        if not url.hostname or url.path not in ("", "/"):
            raise ValidationError(f"{item!r} is not http://host:port", field="etcd")
        result.append(Endpoint(host=url.hostname, port=port, tls=url.scheme == "https"))
    if not result:
        raise ValidationError("no endpoint given", field="etcd")
    return tuple(result)


def check_security(endpoints: tuple[Endpoint, ...], security: EtcdSecurity) -> list[str]:
    """Refuse TLS files given for plain-http endpoints only (they would be silently unused); return
    the non-loopback http endpoints a password would cross in clear text (the caller warns)."""
    if (security.cacert or security.cert) and not any(e.tls for e in endpoints):
        raise ValidationError("TLS files were given (--etcd-cacert/--etcd-cert/--etcd-key) but every endpoint is "
                              "http://; use https:// endpoints", field="etcd")
    if security.password is None:
        return []
    return [str(e) for e in endpoints if not e.tls and e.host not in ("localhost", "127.0.0.1", "::1")
            and not e.host.startswith("127.")]
