"""A throw-away CA for the serving tests, over :mod:`tests.support.tlsgen`: leaf certificates as
nginx stores them (chain, then key) with their serial as ``openssl x509 -serial`` prints it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.tlsgen import DAY, issue, make_ca


@dataclass(frozen=True)
class Leaf:
    cert_pem: str
    key_pem: str
    serial: int
    issuer_pem: str = ""  # the CA after the leaf in the chain (``leaf(..., chain=True)``)

    @property
    def pem(self) -> str:
        """What nginx stores: the chain, then the key."""
        return self.cert_pem + self.issuer_pem + self.key_pem

    @property
    def serial_hex(self) -> str:
        return f"{self.serial:X}"


class ScratchCA:
    """A CA a test client trusts (``--cacert``); :meth:`leaf` signs names."""

    def __init__(self, name: str = "daprdockr test CA") -> None:
        self.ca = make_ca(name)

    @property
    def pem(self) -> str:
        return self.ca.cert_pem

    def write(self, path: Path) -> Path:
        path.write_text(self.pem)
        return path

    def leaf(self, *names: str, days: float = 30, ocsp_url: str | None = None, chain: bool = False) -> Leaf:
        """A leaf for ``names``; ``ocsp_url`` in its AIA; ``chain``: this CA follows it in :attr:`Leaf.pem`."""
        now = time.time()
        got = issue(list(names), ca=self.ca, not_before=now - DAY, not_after=now + days * DAY, ocsp_url=ocsp_url)
        return Leaf(cert_pem=got.cert_pem, key_pem=got.key_pem, serial=got.cert.serial_number,
                    issuer_pem=self.ca.cert_pem if chain else "")
