"""ACME end to end: three real agent processes (hollow runtime: no Docker needed), Debian's real
pebble on loopback with its ``-dnsserver`` pointing at a resolver of the test, real etcd.

* one service with HTTPS: the certificate is ordered once (one agent holds the host's lock) and
  lands in etcd;
* the agent holding the lock is SIGKILLed mid-order: its lease ends, another agent takes the host
  over and finishes;
* a short ``certificateValidityPeriod``: the certificate is renewed at 2/3 of its lifetime.

Two ways of answering the CA's HTTP-01 requests (the ``serving`` parameter):

* ``nginx``: every agent's own nginx answers ``/.well-known/acme-challenge/`` from the records in
  etcd, on one port number on 127.0.0.11/12/13 (pebble's httpPort), and serves the certificate
  on its HTTPS listener; the resolver hands pebble's validations the three addresses in turn, so
  every agent must answer; the served certificate is checked by SNI against pebble's root, and on
  renewal the nginx worker pids stay the same.
* ``etcd-answers``: the agents run no nginx; a test HTTP server answers from the challenge records
  in etcd (tests/support/acme_answers.py), as the agents' nginx does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.tls_store import TlsStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.tls import CertRecord
from tests.agent.cluster import kill_spawned, spawn_agent
from tests.conftest import missing
from tests.support.acme_answers import etcd_answers
from tests.support.pebble import Pebble, pebble_server
from tests.support.procs import free_port, terminate

pytestmark = [pytest.mark.etcd, pytest.mark.slow]
HOST = "shop.acme.test"
NODES = {"a1": "127.0.0.11", "a2": "127.0.0.12", "a3": "127.0.0.13"}


@dataclass
class AcmeCluster:
    serving: str
    pebble: Pebble
    tls: TlsStore
    state_dir: Path
    https_port: int
    api_port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    async def cert(self) -> CertRecord | None:
        return await self.tls.get_cert(HOST)

    async def wait_cert(self, *, other_than: str = "", within: float = 60) -> CertRecord:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            rec = await self.cert()
            if rec is not None and rec.info.serial != other_than:
                return rec
            await asyncio.sleep(0.2)
        raise AssertionError(f"no certificate for {HOST} (other than {other_than!r}) within {within}s; "
                             f"order: {await self.tls.get_order(HOST)}; logs:\n{self.logs()}")

    def kill(self, node: str) -> None:
        kill_spawned(self.procs.pop(node), state_dir=self.state_dir, node=node)

    def log(self, node: str) -> str:
        return (self.state_dir / f"{node}.log").read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n" + "\n".join(self.log(n).splitlines()[-15:]) for n in NODES)

    def served_serial(self, node: str) -> str:
        """The serial of the certificate the node's nginx serves for HOST (verified against
        pebble's root and for the name, as a browser would)."""
        context = ssl.create_default_context(cadata=self.pebble.root_pem)
        with socket.create_connection((NODES[node], self.https_port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=HOST) as tls:
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return format(x509.load_der_x509_certificate(der).serial_number, "x")

    def acme_orders(self, node: str) -> dict[str, float]:
        """``daprdockr_acme_orders_total`` by result, from the node's /metrics."""
        with urllib.request.urlopen(f"http://{NODES[node]}:{self.api_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return {s.labels["result"]: s.value for f in text_string_to_metric_families(text)
                if f.name == "daprdockr_acme_orders" for s in f.samples if s.name.endswith("_total")}

    def nginx_workers(self, node: str) -> set[int]:
        master = int((self.state_dir / node / "nginx" / "nginx.pid").read_text())
        return set(map(int, Path(f"/proc/{master}/task/{master}/children").read_text().split()))


def _serial(rec: CertRecord) -> str:
    return rec.info.serial.lstrip("0") or "0"


@contextlib.asynccontextmanager
async def acme_cluster(serving: str, *, store: EtcdStore, etcd: str, prefix: str, tmp: Path,
                       validity: int | None = None) -> AsyncIterator[AcmeCluster]:
    if not shutil.which("pebble"):
        missing("pebble (apt-get install pebble)")
    state_dir = tmp / "state"
    state_dir.mkdir(mode=0o700)
    http_port = free_port(NODES["a1"])
    https_port = free_port(NODES["a1"])
    api_port = free_port(NODES["a1"])
    tls = TlsStore(store=store)
    with pebble_server(tmp / "pebble", http_port=http_port, validity=validity) as pebble:
        if serving == "nginx":
            pebble.dns[HOST] = list(NODES.values())  # in turn: every agent's nginx must answer
            answers: contextlib.AbstractAsyncContextManager[object] = contextlib.nullcontext()
        else:
            pebble.dns[HOST] = "127.0.0.1"
            answers = etcd_answers(tls, listen=("127.0.0.1", http_port))
        cluster = AcmeCluster(serving=serving, pebble=pebble, tls=tls, state_dir=state_dir, https_port=https_port,
                               api_port=api_port)
        async with answers:
            try:
                for node, ip in NODES.items():
                    serve = (("--http-listen", f"{ip}:{http_port}", "--https-listen", f"{ip}:{https_port}",
                              "--allow-insecure-keys") if serving == "nginx" else ())
                    cluster.procs[node] = spawn_agent(
                        etcd=etcd, prefix=prefix, node=node, ip=ip, state_dir=state_dir, ttl=2,
                        extra=("--runtime", "hollow", "--acme-directory", pebble.directory,
                               "--acme-email", "ops@example.com", "--acme-ca-file", str(pebble.ca_file),
                               "--acme-interval", "1", "--api-listen", f"{ip}:{api_port}", *serve))
                await _registered(store, len(NODES), cluster)
                await VersionStore(store).put_service(ServiceSpec.from_dict(
                    {"image": "busybox", "instances": 0, "http_host": HOST, "http_port": 80, "https": "on"},
                    name=ServiceName.parse("web.shop")))
                yield cluster
            finally:
                for node in list(cluster.procs):
                    proc = cluster.procs.pop(node)
                    proc.terminate()
                    terminate(proc, grace=15)


async def _registered(store: EtcdStore, count: int, cluster: AcmeCluster) -> None:
    deadline = time.monotonic() + 30
    while len((await store.snapshot()).nodes) < count:
        for node, proc in cluster.procs.items():
            assert proc.poll() is None, f"agent {node} exited:\n{cluster.log(node)}"
        assert time.monotonic() < deadline, cluster.logs()
        await asyncio.sleep(0.2)


async def _served_everywhere(cluster: AcmeCluster, rec: CertRecord, nodes: list[str], *, within: float = 5) -> None:
    if cluster.serving != "nginx":
        return
    deadline = time.monotonic() + within
    while True:
        served = {n: _try_serial(cluster, n) for n in nodes}
        if all(s == _serial(rec) for s in served.values()):
            return
        assert time.monotonic() < deadline, f"served serials {served}, stored {rec.info.serial}"
        await asyncio.sleep(0.1)


def _try_serial(cluster: AcmeCluster, node: str) -> str:
    try:
        return cluster.served_serial(node)
    except (OSError, ssl.SSLError) as exc:
        return f"error: {exc}"


SERVING = ["nginx", "etcd-answers"]


@pytest.mark.parametrize("serving", SERVING)
async def test_one_order_for_the_cluster_served_by_every_agent(
    serving: str, store: EtcdStore, etcd_endpoints: str, prefix: str, tmp_path: Path
) -> None:
    async with acme_cluster(serving, store=store, etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path) as c:
        rec = await c.wait_cert()
        assert rec.source == "acme" and rec.info.names == (HOST,) and "Pebble" in rec.info.issuer
        await asyncio.sleep(3)  # (three more passes of every agent)
        assert c.pebble.orders_issued() == 1, "one order for the whole cluster"
        state, _ = await c.tls.read()
        assert state.orders[HOST].state == "valid" and state.orders[HOST].node in NODES
        assert state.locks == {} and state.challenges == {}
        assert state.account is not None and state.account.uri
        assert sum(f"ACME certificate for {HOST} issued" in c.log(n) for n in NODES) == 1
        metrics = [c.acme_orders(n) for n in NODES]
        assert sum(m.get("issued", 0) for m in metrics) == 1 and sum(m.get("failed", 0) for m in metrics) == 0
        await _served_everywhere(c, rec, list(NODES))
        if serving == "nginx":  # pebble's validations reached every agent's nginx, not only the orderer's
            assert {a for h, a in c.pebble.answered if h == HOST} == set(NODES.values())


@pytest.mark.parametrize("serving", SERVING)
async def test_the_ordering_agent_killed_mid_order_another_finishes(
    serving: str, store: EtcdStore, etcd_endpoints: str, prefix: str, tmp_path: Path
) -> None:
    async with acme_cluster(serving, store=store, etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path) as c:
        deadline = time.monotonic() + 30
        holder = None
        while holder is None:  # mid-order: the order exists at the CA and its answer is published
            state, _ = await c.tls.read()
            if state.challenges and HOST in state.locks and HOST in state.orders:
                holder = state.locks[HOST]
                assert state.orders[HOST].state == "ordering" and state.orders[HOST].node == holder
            assert time.monotonic() < deadline, "no agent published a challenge"
            await asyncio.sleep(0.02)
        assert await c.cert() is None, "the order finished before the kill"
        c.kill(holder)  # SIGKILL: its lease (TTL 2 s) ends, with the lock and the published answers
        if serving == "nginx":  # the host's DNS names the live nodes only (a dead one cannot answer the CA)
            c.pebble.dns[HOST] = [ip for n, ip in NODES.items() if n != holder]
        rec = await c.wait_cert(within=60)
        deadline = time.monotonic() + 5
        while True:  # (the orderer records the order, then deletes its answers and unlocks)
            state, _ = await c.tls.read()
            if state.orders[HOST].state == "valid" and not state.locks and not state.challenges:
                break
            assert time.monotonic() < deadline, f"left behind: {state.orders}, {state.locks}, {state.challenges}"
            await asyncio.sleep(0.1)
        order = state.orders[HOST]
        assert order.node != holder
        assert f"taking over the order of {HOST} from {holder}" in c.log(order.node)
        assert f"ACME certificate for {HOST} issued" not in c.log(holder)
        await _served_everywhere(c, rec, [n for n in NODES if n != holder])


@pytest.mark.parametrize("serving", SERVING)
async def test_renewal_of_a_short_lived_certificate_served_everywhere_without_reload(
    serving: str, store: EtcdStore, etcd_endpoints: str, prefix: str, tmp_path: Path
) -> None:
    validity = 24  # seconds: renewed 16 s after it was issued
    async with acme_cluster(serving, store=store, etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path,
                            validity=validity) as c:
        first = await c.wait_cert()
        assert first.info.not_after - first.info.not_before <= validity + 1
        await _served_everywhere(c, first, list(NODES))
        workers = {n: c.nginx_workers(n) for n in NODES} if serving == "nginx" else {}
        renewed = await c.wait_cert(other_than=first.info.serial, within=validity + 20)
        assert renewed.source == "acme"
        assert renewed.info.not_before >= first.info.not_before + (first.info.not_after - first.info.not_before) * 0.6
        await _served_everywhere(c, renewed, list(NODES))
        if serving == "nginx":
            assert {n: c.nginx_workers(n) for n in NODES} == workers, "nginx was reloaded"
        assert os.path.exists(c.pebble.log) and c.pebble.orders_issued() >= 2
