"""Debian's ``pebble`` (the ACME test CA) on loopback for tests, with a tiny DNS resolver of our own.

:func:`pebble_server` makes a CA and a certificate for pebble's own HTTPS listener (with
``cryptography``), writes its config, starts a dnslib resolver answering A records from a dict the
test fills (``Pebble.dns``: name -> 127.0.0.x; no AAAA, so pebble dials the IPv4 address) and
``pebble -dnsserver`` pointing at it, and fetches the issuing root (new at every start) from the
management port.  Pebble validates HTTP-01 challenges on ``http_port`` of whatever address the
resolver gives for the host.  Both are stopped when the context exits.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import shutil
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dnslib import QTYPE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSServer

from tests.support.procs import free_port, terminate, wait_port


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_listener_tls(dir: Path) -> tuple[Path, Path, Path]:
    """(CA cert, server cert, server key) for pebble's HTTPS listener: 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble listener test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (dir / "listener-ca.pem", dir / "listener.pem", dir / "listener.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem_key(key))
    paths[2].chmod(0o600)
    return paths


class _Resolver(BaseResolver):  # type: ignore[misc]
    """A records from ``names`` (lower-case, no trailing dot): one address, or a list answered in
    turn (one per query: pebble's validations from several perspectives reach different nodes);
    AAAA and unknown names: no answer."""

    def __init__(self, names: dict[str, str | list[str]], answered: list[tuple[str, str]]) -> None:
        self.names = names
        self.answered = answered
        self.turn = itertools.count()

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        qname = request.q.qname
        address = self.names.get(str(qname).rstrip(".").lower())
        if request.q.qtype != QTYPE.A:
            return reply  # (an AAAA lookup, made beside the A one in no fixed order, takes no turn)
        if isinstance(address, list):
            address = address[next(self.turn) % len(address)] if address else None
        if address is not None:
            reply.add_answer(RR(qname, QTYPE.A, rdata=A(address), ttl=0))
            self.answered.append((str(qname).rstrip(".").lower(), address))
        return reply


class _QuietLogger:
    def __getattr__(self, name: str) -> object:
        return lambda *args, **kwargs: None


@dataclass
class Pebble:
    directory: str  # the ACME directory URL
    ca_file: Path  # the CA of pebble's HTTPS listener (--acme-ca-file)
    root_pem: str  # the root that issues the test certificates (new at every pebble start)
    http_port: int  # where pebble fetches /.well-known/acme-challenge/ (on the host's address)
    log: Path
    dns: dict[str, str | list[str]] = field(default_factory=dict)  # host -> address(es), read at every query
    answered: list[tuple[str, str]] = field(default_factory=list)  # (host, address) of every A answer given

    def orders_issued(self) -> int:
        """How many certificates pebble issued (from its log)."""
        return self.log.read_text(errors="replace").count("Issued certificate serial")



@contextmanager
def pebble_server(dir: Path, *, http_port: int, validity: int | None = None,
                  env: dict[str, str] | None = None) -> Iterator[Pebble]:
    """pebble on free loopback ports, validating HTTP-01 on ``http_port``, certificates valid for
    ``validity`` seconds (pebble's default: about 5 years).  ``env`` adds PEBBLE_* settings."""
    binary = shutil.which("pebble") or "/usr/bin/pebble"
    dir.mkdir(parents=True, exist_ok=True)
    ca, cert, key = make_listener_tls(dir)
    listen, manage = free_port(), free_port()
    config = {"pebble": {
        "listenAddress": f"127.0.0.1:{listen}", "managementListenAddress": f"127.0.0.1:{manage}",
        "certificate": str(cert), "privateKey": str(key), "httpPort": http_port, "tlsPort": free_port(),
        "ocspResponderURL": "", "externalAccountBindingRequired": False,
        **({"certificateValidityPeriod": validity} if validity is not None else {}),
    }}
    (dir / "pebble-config.json").write_text(json.dumps(config))
    names: dict[str, str | list[str]] = {}
    answered: list[tuple[str, str]] = []
    dns_port = free_port(udp=True)
    resolver = DNSServer(_Resolver(names, answered), address="127.0.0.1", port=dns_port, logger=_QuietLogger())
    resolver.start_thread()
    log = dir / "pebble.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [binary, "-config", str(dir / "pebble-config.json"), "-dnsserver", f"127.0.0.1:{dns_port}"],
                stdout=out, stderr=subprocess.STDOUT, cwd=dir,
                env={**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
                     "PEBBLE_AUTHZREUSE": "0", **(env or {})})
        wait_port("127.0.0.1", listen, timeout=20, proc=proc, log=log)
        wait_port("127.0.0.1", manage, timeout=20, proc=proc, log=log)
        context = ssl.create_default_context(cafile=str(ca))
        with urllib.request.urlopen(f"https://127.0.0.1:{manage}/roots/0", context=context, timeout=10) as r:
            root = r.read().decode()
        yield Pebble(directory=f"https://127.0.0.1:{listen}/dir", ca_file=ca, root_pem=root, http_port=http_port,
                     log=log, dns=names, answered=answered)
    finally:
        if proc is not None and proc.poll() is None:
            terminate(proc, grace=5)
        resolver.stop()
