"""The OCSP stapler's timing with a clock the test moves (the real responder and nginx are in
tests/test_proxy_ocsp.py): refresh at half the validity, a staple past its nextUpdate dropped, a
rotated certificate's staple dropped at once, failures backed off and counted."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from cryptography.x509 import ocsp

from daprdockr.agent.ocsp_stapler import OcspStapler
from daprdockr.core.ocsp import pem_digest
from daprdockr.errors import OcspError
from tests.support.ocsp_responder import ocsp_answer
from tests.support.tls_pki import ScratchCA

URL = "http://127.0.0.24:1/"
START = 2_000_000_000.0


class Nginx:
    def __init__(self) -> None:
        self.tables: list[Mapping[str, tuple[str, bytes]]] = []

    def set_staples(self, staples: Mapping[str, tuple[str, bytes]]) -> None:
        self.tables.append(staples)


async def test_refresh_expiry_rotation_and_failures() -> None:
    ca = ScratchCA()
    now = [START]
    leaves = {}
    up = [True]

    async def fetch(url: str, request: bytes) -> bytes:
        assert url == URL
        if not up[0]:
            raise OcspError("down")
        when = dt.datetime.fromtimestamp(now[0], dt.UTC)
        leaf = leaves[ocsp.load_der_ocsp_request(request).serial_number]
        return ocsp_answer(request, ca=ca.ca, leaf_pem=leaf, validity=600, now=when)

    nginx = Nginx()
    stapler = OcspStapler(nginx=nginx, fetch=fetch, clock=lambda: now[0])
    first = ca.leaf("a.example.com", ocsp_url=URL, chain=True)
    leaves[first.serial] = first.cert_pem
    stapler.want({"a.example.com": first.pem, "b.example.com": ca.leaf("b.example.com", chain=True).pem})
    delay = await stapler.staple_once()
    assert list(nginx.tables[-1]) == ["a.example.com"] and nginx.tables[-1]["a.example.com"][0] == pem_digest(first.pem)
    assert delay == 330  # half of (600 s + the minute before now the responder dates it)
    now[0] += 100
    assert await stapler.staple_once() == 230 and len(nginx.tables) == 1  # nothing due, nothing posted
    # the responder goes down at the refresh: the staple stays while valid, then is dropped
    up[0] = False
    now[0] = START + 330
    assert await stapler.staple_once() == 30 and stapler.failures == 1 and len(nginx.tables) == 1
    now[0] = START + 360
    await stapler.staple_once()
    assert stapler.failures == 2 and len(nginx.tables) == 1
    now[0] = START + 601
    await stapler.staple_once()
    assert nginx.tables[-1] == {} and stapler.staples == 0
    # back up; then a rotation drops the old staple and fetches the new certificate's
    up[0] = True
    now[0] = START + 2000
    await stapler.staple_once()
    assert stapler.staples == 1
    second = ca.leaf("a.example.com", ocsp_url=URL, chain=True)
    leaves[second.serial] = second.cert_pem
    stapler.want({"a.example.com": second.pem})
    await stapler.staple_once()
    assert nginx.tables[-1]["a.example.com"][0] == pem_digest(second.pem)
