"""A real agent process (``--runtime hollow``, configured by a file) speaks the systemd notify
protocol to a real AF_UNIX datagram socket given as ``NOTIFY_SOCKET``: ``STATUS=joining`` while
etcd is unreachable and no ``READY=1``; ``READY=1`` once its node record is in etcd, its DNS
answers and its nginx serves HTTP; ``WATCHDOG=1`` every half ``WATCHDOG_USEC``; ``STOPPING=1`` at
SIGTERM."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import DNSRecord

from tests.e2e.realcluster import free_port_on
from tests.support.notify import Receiver
from tests.support.procs import EtcdCluster, free_port, terminate

pytestmark = [pytest.mark.etcd, pytest.mark.nginx]

IP = "127.0.0.23"
WATCHDOG_USEC = 1_000_000  # (pings every 0.5 s; a loaded 2-core host must not miss the 1 s)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def node_record(cluster: EtcdCluster, key: str) -> str:
    r = subprocess.run(cluster.etcdctl("get", key, "--print-value-only"), capture_output=True, text=True,
                       timeout=10, env={**os.environ, "ETCDCTL_API": "3"})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Host": "nothing.test"}), timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_agent_notifies_systemd(tmp_path: Path, receiver: Receiver) -> None:
    if not shutil.which("etcd"):
        pytest.fail("etcd is missing")
    cluster = EtcdCluster(tmp_path / "etcd", client_ports=[free_port()])  # started only later
    (tmp_path / "etcd").mkdir()
    prefix = f"/t{uuid.uuid4().hex[:12]}"
    dns_port, http_port = free_port_on(IP), free_port_on(IP)
    state = tmp_path / "state"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'etcd = "{cluster.endpoints}"\nprefix = "{prefix}"\nnode-id = "sd1"\nadvertise-ip = "{IP}"\n'
        f'runtime = "hollow"\ndns-listen = "{IP}:{dns_port}"\ndns-workers = 0\nhttp-listen = "{IP}:{http_port}"\n'
        f'nginx = "{shutil.which("nginx") or "/usr/sbin/nginx"}"\napi-listen = "off"\nstate-dir = "{state}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAPRDOCKR_")}
    env.update(NOTIFY_SOCKET=receiver.name, WATCHDOG_USEC=str(WATCHDOG_USEC))
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "daprdockr", "agent", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        # etcd is not there yet: the agent says it is joining, and is not ready
        receiver.wait_for("STATUS=joining: reading etcd", within=20)
        time.sleep(1.5)
        assert not [text for _, text in receiver.got if "READY=1" in text], receiver.got
        assert proc.poll() is None, log.read_text()

        cluster.start()
        ready = receiver.wait_for("READY=1", within=30)
        record = node_record(cluster, f"{prefix}/nodes/sd1")  # (read the moment READY arrived)
        assert f'"{IP}"' in record, record
        reply = DNSRecord.parse(DNSRecord.question("1.web.myapp.container").send(IP, dns_port, timeout=2))
        assert reply.header.qr == 1
        assert http_status(f"http://{IP}:{http_port}/") == 404  # (nginx answers: no service has that host)
        ready_text = next(text for at, text in receiver.got if at == ready)
        assert "STATUS=serving 0 instances" in ready_text.split("\n")

        # the watchdog: every WATCHDOG_USEC / 2 from the agent's loop
        time.sleep(2.5)
        pings = [at for at in receiver.pings() if at > ready]
        assert len(pings) >= 3, pings
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert 0.6 * WATCHDOG_USEC / 2e6 <= statistics.median(gaps) <= 1.5 * WATCHDOG_USEC / 2e6, gaps
        assert max(gaps) < WATCHDOG_USEC / 1e6, gaps  # (systemd would have restarted it)

        sigterm = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stopping = receiver.wait_for("STOPPING=1", within=10)
        assert stopping >= sigterm
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            terminate(proc, grace=10)
        cluster.stop()
    sent = [text for _, text in receiver.got]
    first_ready = next(i for i, text in enumerate(sent) if "READY=1" in text.split("\n"))
    assert all("READY=1" not in text for text in sent[first_ready + 1:])  # (ready once)
    assert any(text.startswith("STATUS=joining") for text in sent[:first_ready])
