"""Agents with ``--https-listen`` (hollow runtime: no Docker; real etcd and nginx): a certificate
put in etcd is served by every agent allowed to serve keys, a service's ``https: redirect`` makes
HTTP answer 308, the TLS metrics, and an agent whose etcd has neither TLS nor auth serves only
its default certificate (one warning naming the risk)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import aiohttp
import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.tls_store import TlsStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.agent.tls_watch import INSECURE_WARNING
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.tls import CertRecord
from tests.agent.cluster import local_cluster
from tests.support.procs import free_port
from tests.support.tls_pki import ScratchCA
from tests.test_proxy_tls import curl, served_cert

pytestmark = [pytest.mark.etcd, pytest.mark.nginx]
WEB = ServiceName(group="tls", service="web")


async def test_agents_serve_certificates_from_etcd_and_the_https_policy(
    etcd_endpoints: str, prefix: str, tmp_path: Path, store: EtcdStore, caplog: pytest.LogCaptureFixture
) -> None:
    ports = {ip: (free_port(ip), free_port(ip), free_port(ip)) for ip in ("127.0.0.11", "127.0.0.12")}

    def per_node(i: int, ip: str) -> dict[str, object]:
        http, https, api = ports[ip]
        return {"http_listen": (ip, http), "https_listen": (ip, https), "api_listen": (ip, api),
                "allow_insecure_keys": i == 0}  # (the test etcd is plain http without auth)

    ca = ScratchCA()
    ca_file = ca.write(tmp_path / "ca.pem")
    leaf = ca.leaf("web.example.com")
    caplog.set_level(logging.WARNING, logger="daprdockr.agent.https_setup")
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=2, runtime="hollow",
                             per_node=per_node):
        await TlsStore(store=store).put_cert(CertRecord.make(host="web.example.com", cert_pem=leaf.cert_pem,
                                                             key_pem=leaf.key_pem, source="manual", now=time.time()))
        await VersionStore(store).put_service(ServiceSpec.from_dict(
            {"image": "x", "instances": 0, "http_host": "web.example.com", "http_port": 80, "https": "redirect",
             "hsts": 60}, name=WEB))
        ip1, ip2 = "127.0.0.11", "127.0.0.12"
        https1, https2 = ports[ip1][1], ports[ip2][1]
        deadline = time.monotonic() + 5
        while (await served_cert(ip1, https1, "web.example.com"))[0] != leaf.serial_hex:
            assert time.monotonic() < deadline, "agent 1 never served the certificate"
            await asyncio.sleep(0.05)
        # the agent without a protected etcd (and no --allow-insecure-keys): its default certificate
        _, subject = await served_cert(ip2, https2, "web.example.com")
        assert "daprdockr default certificate n2" in subject
        assert [r.getMessage() for r in caplog.records].count(INSECURE_WARNING) == 1
        # HTTP redirects (308) to HTTPS on the agent's HTTPS port; HTTPS is served (no instance: 503), HSTS
        http1 = ports[ip1][0]
        for _ in range(100):
            _, last, head = await curl(f"http://web.example.com:{http1}/x?y=1",
                                       resolve=f"web.example.com:{http1}:{ip1}", ca=ca_file)
            if last == "1.1 308":
                break
            await asyncio.sleep(0.05)
        assert last == "1.1 308" and f"location: https://web.example.com:{https1}/x?y=1" in head.lower()
        _, last, head = await curl(f"https://web.example.com:{https1}/", resolve=f"web.example.com:{https1}:{ip1}",
                                   ca=ca_file)
        assert last == "2 503" and "strict-transport-security: max-age=60" in head.lower()
        # metrics (the agent polls nginx's counters about every 2 s: a route or TLS change may put
        # the next poll off by one round, so read until the handshakes show, at most 15 s)
        def handshakes_of(text: str) -> float:
            lines = [line for line in text.splitlines() if line.startswith("daprdockr_tls_handshakes_total ")]
            return float(lines[0].split()[1]) if lines else 0.0

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        async with aiohttp.ClientSession() as http:
            while True:
                texts = []
                for ip in (ip1, ip2):
                    async with http.get(f"http://{ip}:{ports[ip][2]}/metrics") as resp:
                        texts.append(await resp.text())
                if handshakes_of(texts[0]) >= 2 or loop.time() > deadline:
                    break
                await asyncio.sleep(0.25)
        assert "daprdockr_tls_certificates 1" in texts[0] and "daprdockr_tls_certificates 0" in texts[1]
        expiry = 'daprdockr_tls_certificate_not_after_seconds{host="web.example.com",source="manual"}'
        assert all(expiry in t for t in texts)
        assert handshakes_of(texts[0]) >= 2


async def test_https_listen_auto_listens_on_443_when_etcd_holds_a_certificate_at_start(
    etcd_endpoints: str, prefix: str, tmp_path: Path, store: EtcdStore, caplog: pytest.LogCaptureFixture
) -> None:
    """``--https-listen auto`` (the default): port 443 of the advertise address when a certificate
    is stored at the agent's start; none without, and one warning when a certificate comes later."""
    ca = ScratchCA()
    leaf = ca.leaf("auto.example.com")
    record = CertRecord.make(host="auto.example.com", cert_pem=leaf.cert_pem, key_pem=leaf.key_pem, source="manual",
                             now=time.time())
    tls = TlsStore(store=store)
    caplog.set_level(logging.INFO, logger="daprdockr.agent")

    def auto(i: int, ip: str) -> dict[str, object]:
        return {"http_listen": (ip, free_port(ip)), "https_auto": True, "allow_insecure_keys": True}

    # no certificate at start: no HTTPS listener; a certificate stored later is said once
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path / "a", nodes=1, runtime="hollow",
                             per_node=auto, first_ip=21):
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.21", 443)
        await tls.put_cert(record)
        deadline = time.monotonic() + 5
        while not any("no HTTPS listener" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "no warning about the certificate that came after the start"
            await asyncio.sleep(0.05)
    # with a certificate in etcd at start: 443 of the advertise address, serving it
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path / "b", nodes=1, runtime="hollow",
                             per_node=auto, first_ip=22):
        deadline = time.monotonic() + 10
        while True:
            try:
                if (await served_cert("127.0.0.22", 443, "auto.example.com"))[0] == leaf.serial_hex:
                    break
            except (OSError, AssertionError):
                pass
            assert time.monotonic() < deadline, "the certificate was not served on 127.0.0.22:443"
            await asyncio.sleep(0.1)
    assert sum("no HTTPS listener" in r.getMessage() for r in caplog.records) == 1
