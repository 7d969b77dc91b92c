"""The TLS watch against a real etcd and a real nginx: certificates and ACME answers written to
etcd are served by SNI with no reload; a malformed value written directly is skipped with one
warning and takes nothing away; without a protected etcd no key is served."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.procs import nginx_group_members
from daprdockr.adapters.tls_store import TlsStore
from daprdockr.agent.tls_watch import TlsWatch
from daprdockr.core.endpoints import EtcdSecurity, parse_endpoints
from daprdockr.core.tls import CertRecord
from daprdockr.core.tls_serving import keys_protected
from tests.support.tls_pki import Leaf
from tests.test_proxy import settle
from tests.test_proxy_tls import EDGE, Tls, curl, served_cert, tls_manager

pytestmark = [pytest.mark.nginx, pytest.mark.etcd]


def record(host: str, leaf: Leaf) -> CertRecord:
    return CertRecord.make(host=host, cert_pem=leaf.cert_pem, key_pem=leaf.key_pem, source="manual", now=time.time())


async def until(check: Callable[[], Awaitable[bool]], *, within: float = 10.0) -> float:
    """Seconds until ``check()`` held; AssertionError after ``within`` (a bound for correctness on
    a loaded host: each check spawns openssl or curl; the speed is printed, and measured by the
    benchmarks)."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < within, f"not within {within}s"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def watching(tls: Tls, store: EtcdStore, *, serve_keys: bool = True) -> AsyncIterator[TlsWatch]:
    watch = TlsWatch(store=TlsStore(store=store), nginx=tls.manager, serve_keys=serve_keys)
    await watch.start()
    task = asyncio.create_task(watch.run())
    try:
        yield watch
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_certificates_from_etcd_are_served_and_a_malformed_one_is_skipped(
    tmp_path: Path, store: EtcdStore, caplog: pytest.LogCaptureFixture
) -> None:
    async with tls_manager(tmp_path) as tls:
        await settle(tls.manager, tls.state())
        certs = TlsStore(store=store)
        web, wild = tls.ca.leaf("web.example.com"), tls.ca.leaf("*.example.com")
        await certs.put_cert(record("web.example.com", web))  # (before the watch starts: the first read)
        async with watching(tls, store) as watch:
            await until(lambda: _serial_is("web.example.com", tls, web))
            pid = tls.manager.pid
            assert pid is not None
            workers = sorted(nginx_group_members(pid))
            await certs.put_cert(record("*.example.com", wild))
            took = await until(lambda: _serial_is("api.example.com", tls, wild))
            # rotation: the new serial within a second, no reload
            new = tls.ca.leaf("web.example.com")
            await certs.put_cert(record("web.example.com", new))
            took = max(took, await until(lambda: _serial_is("web.example.com", tls, new)))
            # a malformed value written straight into etcd: one warning, the host keeps its
            # certificate, the others and nginx are untouched
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="daprdockr.agent.tls_watch"):
                key = certs.schema.cert("web.example.com")
                await store.transaction(compares=[], ops=[(key, b'{"host": "web.example.com", "cert": "junk"}', 0)],
                                        what="test: malformed")
                await store.transaction(compares=[], ops=[(certs.schema.cert("x.example.com"), b"\xff{", 0)],
                                        what="test: malformed")
                await certs.put_cert(record("api.example.com", tls.ca.leaf("api.example.com")))  # (a later event)
                await until(lambda: _has_host(watch, "api.example.com"))
                await asyncio.sleep(0.2)
                state_bad = set(watch.state.bad)
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len([w for w in warnings if "web.example.com" in w]) == 1, warnings
            assert len([w for w in warnings if "x.example.com" in w]) == 1, warnings
            assert state_bad == {key, certs.schema.cert("x.example.com")}
            assert await _serial_is("web.example.com", tls, new)  # kept
            assert await _serial_is("x.example.com", tls, wild)  # the wildcard, not the garbage
            _, last, _ = await curl(f"https://api.example.com:{tls.https}/",
                                    resolve=f"api.example.com:{tls.https}:{EDGE}", ca=tls.ca_file)
            assert last == "2 200"
            # deleting the certificate: the wildcard from the next handshake
            assert await certs.delete_cert("web.example.com")
            await until(lambda: _serial_is("web.example.com", tls, wild))
            assert tls.manager.healthy and tls.manager.pid == pid
            assert sorted(nginx_group_members(pid)) == workers, "nginx was reloaded"
            print(f"a written certificate was served {took:.2f}s after its write (no reload)")


async def test_acme_answers_from_etcd_are_served_on_http(tmp_path: Path, store: EtcdStore) -> None:
    async with tls_manager(tmp_path) as tls:
        await settle(tls.manager, tls.state())
        certs = TlsStore(store=store)
        lease = await store.grant_lease(30)
        async with watching(tls, store):
            await certs.put_challenge("tok-A_1", host="web.example.com", authorization="tok-A_1.thumb", lease=lease)
            url = f"http://web.example.com:{tls.http}/.well-known/acme-challenge/tok-A_1"

            async def answered() -> bool:
                _, last, body = await curl(url, resolve=f"web.example.com:{tls.http}:{EDGE}", ca=tls.ca_file)
                return last == "1.1 200" and body.endswith("tok-A_1.thumb")

            await until(answered)
            await store.revoke_lease(lease)  # the ordering agent is gone: its answers go with it

            async def gone() -> bool:
                _, last, _ = await curl(url, resolve=f"web.example.com:{tls.http}:{EDGE}", ca=tls.ca_file)
                return last == "1.1 404"

            await until(gone)


async def test_no_key_is_served_from_an_unprotected_etcd(tmp_path: Path, store: EtcdStore) -> None:
    assert not keys_protected(parse_endpoints("http://127.0.0.1:2379"), None)
    assert keys_protected(parse_endpoints("https://127.0.0.1:2379"), None)
    assert keys_protected(parse_endpoints("http://127.0.0.1:2379"), EtcdSecurity(user="a", password="b"))
    async with tls_manager(tmp_path) as tls:
        await settle(tls.manager, tls.state())
        certs = TlsStore(store=store)
        await certs.put_cert(record("web.example.com", tls.ca.leaf("web.example.com")))
        async with watching(tls, store, serve_keys=False) as watch:
            await until(lambda: _has_host(watch, "web.example.com"))
            await asyncio.sleep(0.2)
            _, subject = await served_cert(EDGE, tls.https, "web.example.com")
            assert "daprdockr default certificate" in subject
            assert tls.manager.tls.served == 0


async def _serial_is(host: str, tls: Tls, leaf: Leaf) -> bool:
    return (await served_cert(EDGE, tls.https, host))[0] == leaf.serial_hex


async def _has_host(watch: TlsWatch, host: str) -> bool:
    return host in watch.state.certs
