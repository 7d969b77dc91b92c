"""OCSP stapling of the certificates chosen by SNI in Lua, against real nginx, ``openssl s_client
-status`` and a real (tiny) OCSP responder over HTTP: the staple is served for the right
certificate, dropped when it rotates, never taken for a PEM nginx no longer holds, and a responder
that is down leaves the handshake working without one."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest

from daprdockr.agent.ocsp_stapler import OcspStapler
from daprdockr.core.ocsp import pem_digest
from tests.support.ocsp_responder import ocsp_responder
from tests.support.procs import free_port
from tests.support.tls_pki import Leaf
from tests.test_proxy import settle
from tests.test_proxy_tls import EDGE, Tls, run, tls, tls_manager  # noqa: F401  (tls: the fixture)

__all__ = ["tls_manager"]
HOST = "web.example.com"


def stapled_serial(text: str) -> str:
    """The serial (hex, no leading zeros) the stapled response is about."""
    found = re.search(r"Serial Number: ([0-9A-F]+)", text)
    assert found, text
    return found.group(1).lstrip("0")


async def status(t: Tls, sni: str) -> tuple[str, str]:
    """(the OCSP part of ``s_client -status``'s output, the served certificate's serial in hex)."""
    code, out, err = await run("openssl", "s_client", "-connect", f"{EDGE}:{t.https}", "-servername", sni, "-status")
    assert code == 0, err
    code, text, err = await run("openssl", "x509", "-noout", "-serial", stdin=out.encode())
    assert code == 0, err
    serial = re.search(r"serial=([0-9A-F]+)", text)
    assert serial, text
    ocsp = out.split("---")[0]
    return ocsp, serial.group(1).lstrip("0")


async def pushed(t: Tls) -> None:
    for _ in range(200):
        if not t.manager.tls.pending:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"nginx never took the update: {t.manager.last_error}")


async def serve(t: Tls, stapler: OcspStapler, certs: dict[str, Leaf]) -> None:
    """Hand nginx the certificates (as the TLS watch does) and staple them once."""
    table = {h: c.pem for h, c in certs.items()}
    await t.certs(certs)
    stapler.want(table)
    await stapler.staple_once()
    await pushed(t)


@pytest.fixture
async def stoppers() -> AsyncIterator[list[OcspStapler]]:
    """Staplers to stop (their HTTP client) after the test."""
    made: list[OcspStapler] = []
    yield made
    for stapler in made:
        await stapler.stop()


async def test_the_staple_is_good_for_the_served_certificate_and_follows_rotation(
        tls: Tls, stoppers: list[OcspStapler]) -> None:  # noqa: F811
    async with ocsp_responder(ca=tls.ca.ca) as responder:
        leaf = tls.ca.leaf(HOST, ocsp_url=responder.url, chain=True)
        plain = tls.ca.leaf("api.example.com", chain=True)  # no responder: nothing to staple
        responder.know(leaf.cert_pem)
        await settle(tls.manager, tls.state())
        stapler = OcspStapler(nginx=tls.manager)
        stoppers.append(stapler)
        await serve(tls, stapler, {HOST: leaf, "api.example.com": plain})
        assert (responder.requests, stapler.staples, stapler.failures) == (1, 1, 0)

        text, serial = await status(tls, HOST)
        assert serial == leaf.serial_hex
        assert "OCSP Response Status: successful" in text and "Cert Status: good" in text, text
        assert stapled_serial(text) == leaf.serial_hex
        text, _ = await status(tls, "api.example.com")
        assert "OCSP response: no response sent" in text, text

        # a new certificate for the host: nginx drops the old staple with the old PEM at once ...
        new = tls.ca.leaf(HOST, ocsp_url=responder.url, chain=True)
        responder.know(new.cert_pem)
        await tls.certs({HOST: new, "api.example.com": plain})
        text, serial = await status(tls, HOST)
        assert serial == new.serial_hex and "OCSP response: no response sent" in text, text
        # ... refuses a staple fetched for the old PEM ...
        tls.manager.set_staples({HOST: (pem_digest(leaf.pem), b"stale")})
        await pushed(tls)
        text, _ = await status(tls, HOST)
        assert "OCSP response: no response sent" in text, text
        # ... and the stapler fetches the new one's
        stapler.want({HOST: new.pem, "api.example.com": plain.pem})
        await stapler.staple_once()
        await pushed(tls)
        assert responder.requests == 2
        text, serial = await status(tls, HOST)
        assert serial == new.serial_hex and "Cert Status: good" in text and stapled_serial(text) == new.serial_hex


async def test_a_responder_down_leaves_the_handshake_working_without_a_staple(
        tls: Tls, stoppers: list[OcspStapler]) -> None:  # noqa: F811
    down = f"http://127.0.0.24:{free_port('127.0.0.24')}/"  # nothing listens there
    leaf = tls.ca.leaf(HOST, ocsp_url=down, chain=True)
    await settle(tls.manager, tls.state())
    stapler = OcspStapler(nginx=tls.manager, timeout=2.0)
    stoppers.append(stapler)
    await serve(tls, stapler, {HOST: leaf})
    assert (stapler.failures, stapler.staples) == (1, 0)
    text, serial = await status(tls, HOST)
    assert serial == leaf.serial_hex and "OCSP response: no response sent" in text, text
    # not asked again before its backoff
    delay = await stapler.staple_once()
    assert stapler.failures == 1 and delay > 20
