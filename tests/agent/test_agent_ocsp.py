"""An agent with ``--https-listen`` (hollow runtime; real etcd, nginx and a tiny OCSP responder)
staples the OCSP response of a certificate stored in etcd whose leaf names a responder, and says
so in its metrics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.tls_store import TlsStore
from daprdockr.core.tls import CertRecord
from tests.agent.cluster import local_cluster
from tests.support.ocsp_responder import ocsp_responder
from tests.support.procs import free_port
from tests.support.tls_pki import ScratchCA
from tests.test_proxy_ocsp import stapled_serial
from tests.test_proxy_tls import run

pytestmark = [pytest.mark.etcd, pytest.mark.nginx]
HOST = "ocsp.example.com"


async def test_the_agent_staples_the_responders_answer(etcd_endpoints: str, prefix: str, tmp_path: Path,
                                                       store: EtcdStore) -> None:
    ip = "127.0.0.31"
    http, https, api = free_port(ip), free_port(ip), free_port(ip)

    def per_node(i: int, addr: str) -> dict[str, object]:
        return {"http_listen": (ip, http), "https_listen": (ip, https), "api_listen": (ip, api),
                "allow_insecure_keys": True}  # (the test etcd is plain http without auth)

    ca = ScratchCA()
    async with ocsp_responder(ca=ca.ca) as responder:
        leaf = ca.leaf(HOST, ocsp_url=responder.url, chain=True)
        responder.know(leaf.cert_pem)
        async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=1, runtime="hollow",
                                 per_node=per_node, first_ip=31):
            await TlsStore(store=store).put_cert(CertRecord.make(
                host=HOST, cert_pem=leaf.cert_pem + leaf.issuer_pem, key_pem=leaf.key_pem, source="manual",
                now=time.time()))
            deadline = time.monotonic() + 10
            while True:
                code, out, err = await run("openssl", "s_client", "-connect", f"{ip}:{https}", "-servername", HOST,
                                           "-status")
                assert code == 0, err
                if "Cert Status: good" in out:
                    break
                assert time.monotonic() < deadline, f"no staple: {out.split('---')[0]}"
                await asyncio.sleep(0.1)
            assert "OCSP Response Status: successful" in out and stapled_serial(out) == leaf.serial_hex
            async with aiohttp.ClientSession() as session, session.get(f"http://{ip}:{api}/metrics") as resp:
                text = await resp.text()
            assert "daprdockr_tls_ocsp_staples 1" in text and "daprdockr_tls_ocsp_fetch_failures_total 0" in text
