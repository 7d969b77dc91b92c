"""What this node's nginx serves over HTTPS, from the TLS state in etcd.  Pure.

* :func:`keys_protected`: private keys are served only from an etcd reached over TLS or with
  auth (anyone who can reach an open etcd can read them); ``--allow-insecure-keys`` overrides.
* :func:`served_certs`: host -> PEM (chain, then key) of every readable certificate.  A host
  whose stored value turned malformed keeps what was served before (bad data in etcd never takes
  a working certificate away; a deleted key does).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from daprdockr.core.endpoints import Endpoint, EtcdSecurity
from daprdockr.core.nginx_tls import served_pem
from daprdockr.core.tls_keys import TlsSchema
from daprdockr.core.tls_state import TlsState


def keys_protected(endpoints: Iterable[Endpoint], security: EtcdSecurity | None) -> bool:
    """True if etcd is reached over TLS (every endpoint) or with a user (etcd auth)."""
    if security is not None and security.user:
        return True
    points = list(endpoints)
    return bool(points) and all(p.tls for p in points)


def served_certs(state: TlsState, schema: TlsSchema, *, previous: Mapping[str, str]) -> dict[str, str]:
    """Host -> PEM for nginx; ``previous`` is what it was given before."""
    out = {host: served_pem(rec.cert_pem, rec.key_pem) for host, rec in state.certs.items()}
    for key in state.bad:
        parsed = schema.parse(key)
        if parsed is not None and parsed.kind == "cert" and parsed.name in previous and parsed.name not in out:
            out[parsed.name] = previous[parsed.name]
    return out
