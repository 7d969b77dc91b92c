"""What the agent tells nginx about HTTPS: the bodies of the control socket's ``/certs`` and
``/acme`` posts, and nginx's answer.  Pure (see ``lua/daprdockr/tls.lua`` for the other side).

``certs`` maps a host (``*.example.com`` for a wildcard) to its PEM: the certificate chain, then
the private key (:func:`served_pem`); ``challenges`` maps an ACME HTTP-01 token to its key
authorization.  Like the routing table, only changes are posted (``set``/``del``), and all of it
after nginx (re)started (``full``: nginx drops what the body does not name).  ``staples`` maps a
host to the sha1 of the PEM it was fetched for (:func:`~daprdockr.core.ocsp.pem_digest`) and its
OCSP response (DER): nginx takes it only while it holds that PEM.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

CertTable = Mapping[str, str]
_HOST = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9_.-]{0,251}[a-z0-9])?")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
_AUTHORIZATION = re.compile(r"[A-Za-z0-9_.-]{1,512}")


def served_pem(cert_pem: str, key_pem: str) -> str:
    """The value nginx stores for a host: the chain, then the key."""
    return cert_pem.rstrip("\n") + "\n" + key_pem.rstrip("\n") + "\n"


def good_host(host: str) -> bool:
    return _HOST.fullmatch(host) is not None


def good_challenge(token: str, authorization: str) -> bool:
    return _TOKEN.fullmatch(token) is not None and _AUTHORIZATION.fullmatch(authorization) is not None


def _changed(old: Mapping[str, str] | None, new: Mapping[str, str]) -> tuple[list[str], list[str]]:
    base: Mapping[str, str] = old or {}
    sets = [k for k in sorted(new) if old is None or base.get(k) != new[k]]
    return sets, sorted(set(base) - set(new))


def certs_update(old: CertTable | None, new: CertTable, *, generation: int) -> bytes:
    """The ``/certs`` body taking nginx from ``old`` to ``new`` (all of ``new`` when ``old`` is
    None); b"" when nothing changed.  Hosts that are not host names are left out."""
    sets, dels = _changed(old, new)
    parts: list[bytes] = [f"full {generation}\n".encode()] if old is None else []
    for host in sets:
        if good_host(host):
            pem = new[host].encode()
            parts.append(f"set {host} {len(pem)}\n".encode() + pem + b"\n")
    parts.extend(f"del {host}\n".encode() for host in dels if good_host(host))
    return b"".join(parts)


def ocsp_update(old: Mapping[str, tuple[str, bytes]] | None, new: Mapping[str, tuple[str, bytes]], *,
                generation: int) -> bytes:
    """The ``/ocsp`` body, as :func:`certs_update`: ``set <host> <pem sha1> <bytes>`` then the DER."""
    base: Mapping[str, tuple[str, bytes]] = old or {}
    parts: list[bytes] = [f"full {generation}\n".encode()] if old is None else []
    for host in sorted(new):
        if (old is None or base.get(host) != new[host]) and good_host(host):
            digest, der = new[host]
            parts.append(f"set {host} {digest} {len(der)}\n".encode() + der + b"\n")
    parts.extend(f"del {host}\n".encode() for host in sorted(set(base) - set(new)) if good_host(host))
    return b"".join(parts)


def acme_update(old: Mapping[str, str] | None, new: Mapping[str, str], *, generation: int) -> bytes:
    """The ``/acme`` body, as :func:`certs_update` (tokens or answers of other characters are left out)."""
    sets, dels = _changed(old, new)
    lines = [f"full {generation}"] if old is None else []
    lines.extend(f"set {t} {new[t]}" for t in sets if good_challenge(t, new[t]))
    lines.extend(f"del {t}" for t in dels if _TOKEN.fullmatch(t))
    return ("\n".join(lines) + "\n").encode() if lines else b""


def refused_certs(answer: str) -> dict[str, str]:
    """The hosts nginx could not read the PEM of (``bad <host> <reason>`` lines) and why."""
    out = {}
    for line in answer.splitlines():
        verb, _, rest = line.partition(" ")
        if verb == "bad":
            host, _, reason = rest.partition(" ")
            out[host] = reason
    return out
