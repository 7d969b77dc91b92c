"""Test PKI made with the openssl command: a CA, a server certificate for 127.0.0.1, client certs."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def _run(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@dataclass(frozen=True, slots=True)
class Pair:
    cert: Path
    key: Path


def make_ca(dir: Path, name: str) -> Pair:
    pair = Pair(cert=dir / f"{name}.crt", key=dir / f"{name}.key")
    _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
         "-subj", f"/CN={name}", "-keyout", str(pair.key), "-out", str(pair.cert))
    return pair


def issue(dir: Path, ca: Pair, name: str, *, server: bool) -> Pair:
    pair = Pair(cert=dir / f"{name}.crt", key=dir / f"{name}.key")
    csr = dir / f"{name}.csr"
    ext = dir / f"{name}.ext"
    ext.write_text(("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
                   if server else "extendedKeyUsage=clientAuth\n")
    _run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={name}",
         "-keyout", str(pair.key), "-out", str(csr))
    _run("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
         "-days", "2", "-extfile", str(ext), "-out", str(pair.cert))
    return pair
