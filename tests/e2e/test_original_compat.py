"""The original DaprDockr's way of running, end to end on real etcd, Docker and DNS.

* ``daprdockrd`` started with only ``ETCD_HOSTS`` and ``HOST_IP`` (the original image's way) runs an
  agent on that address: its node record, its DNS on port 53 there (with the original's SRV form
  ``<port>.<proto>.<n>.<service>.<group>.container`` and ``<group>.container``), nginx on port 80,
  services set with ``daprdockrcmd``; a bind mount outside ``-allow-bind`` fails and starts nothing.
* A container started by the agent resolves a peer instance's ``.container`` name, and a name
  outside ``.container`` through forwarding, with the agent's DNS as its ``HostConfig.Dns`` (the
  client uses the host network, so every packet stays on this machine's loopback addresses).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from dnslib import QTYPE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSServer

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.clikit.agentconfig import default_node_id
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from tests.agent.cluster import remove_node_containers
from tests.e2e.probes import dig, dig_until, eventually
from tests.support.procs import free_port

pytestmark = [pytest.mark.slow, pytest.mark.etcd, pytest.mark.docker, pytest.mark.nginx, pytest.mark.timeout(180)]
BIN = Path(sys.executable).parent
IMG = "daprdockr-test/busybox:latest"
SERVE = "echo $DAPRDOCKR_INSTANCE > /www/id; exec httpd -f -p 8080 -h /www"


def cmd(etcd: str, *args: str, prefix: str = "/daprdockr") -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "daprdockrcmd"), "-etcd", etcd, "-prefix", prefix, *args], capture_output=True,
                          text=True, timeout=60)


def spawn(argv: list[str], *, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)


def stop(proc: subprocess.Popen[bytes], node: str) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    remove_node_containers([node])


async def test_daprdockrd_with_only_etcd_hosts_and_host_ip_runs_an_agent_on_that_address(
    etcd_endpoints: str, docker_image: str, tmp_path: Path
) -> None:
    host_ip = "127.0.0.41"
    node = default_node_id()  # the host name, as for the original
    # the original image's environment, and nothing else: no flags
    env = {"PATH": os.environ["PATH"], "ETCD_HOSTS": etcd_endpoints, "HOST_IP": host_ip}
    proc = spawn([str(BIN / "daprdockrd")], log=tmp_path / "daprdockrd.log", env=env)
    async with EtcdStore(endpoints=parse_endpoints(etcd_endpoints), schema=KeySchema("/daprdockr")) as store:
        try:
            state = await eventually(store.snapshot, lambda s: node in s.nodes, timeout=30)
            record = state.nodes[node]
            assert (record.address, record.dns, record.http) == (host_ip, f"{host_ip}:53", "0.0.0.0:80"), (
                (tmp_path / "daprdockrd.log").read_text())
            set_ = cmd(etcd_endpoints, "-svc", "web.orig", "-set", "-image", IMG, "-instances", "2",
                       "-cmd", f"sh -c '{SERVE}'", "-http-host", "web.orig.test", "-http-port", "8080")
            assert set_.returncode == 0, set_.stderr
            state = await eventually(store.snapshot, lambda s: sum(r.routable for r in s.instances.values()
                                                                   if str(r.service) == "web.orig") == 2, timeout=60)
            one = next(r for r in state.instances.values() if str(r.service) == "web.orig" and r.number == 1)
            assert one.address == host_ip
            answer = await dig_until(host_ip, 53, "1.web.orig.container", lambda d: bool(d.records))
            assert answer.records == (host_ip,)
            srv = dig(host_ip, 53, "8080.tcp.1.web.orig.container", "SRV")
            assert srv.records == (f"0 0 {one.port_for(8080)} 1.web.orig.container.",)
            assert dig(host_ip, 53, "orig.container").records == (host_ip,)
            async with aiohttp.ClientSession() as session, session.get(
                    f"http://{host_ip}:80/id", headers={"Host": "web.orig.test"}) as resp:
                assert resp.status == 200 and (await resp.text()).strip() in ("1", "2")
            # a bind mount outside the agent's -allow-bind paths (none): refused, nothing starts
            bad = cmd(etcd_endpoints, "-svc", "bind.orig", "-set", "-image", IMG, "-instances", "1", "-cmd",
                      "sleep 300", "-volume", "/etc:/host-etc")
            assert bad.returncode == 0, bad.stderr
            state = await eventually(store.snapshot, lambda s: any(
                str(r.service) == "bind.orig" and r.state == "failed" for r in s.instances.values()), timeout=30)
            failed = next(r for r in state.instances.values() if str(r.service) == "bind.orig")
            assert "--allow-bind" in failed.error and "/etc" in failed.error, failed.error
            # no container at all, not even a created one that never started
            made = subprocess.run(["docker", "ps", "-aq", "--filter", "label=daprdockr.service=bind",
                                   "--filter", "label=daprdockr.group=orig"],
                                  capture_output=True, text=True, check=True)
            assert made.stdout == ""
        finally:
            for svc in ("web.orig", "bind.orig"):
                cmd(etcd_endpoints, "-svc", svc, "-del")
            stop(proc, node)
            for key in ("history", "rollouts"):
                for kv in (await store.read_prefix(f"/daprdockr/{key}/orig/"))[0]:
                    await store.transaction(compares=[], ops=[(kv.key, None, 0)], what="clean up")


class _Outside(BaseResolver):  # type: ignore[misc]
    """The "rest of the world" for forwarding: one name, on loopback."""

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        if str(request.q.qname) == "outside.test.":
            reply.add_answer(RR("outside.test.", QTYPE.A, rdata=A("127.0.0.99"), ttl=5))
        return reply


@pytest.fixture
def upstream() -> Iterator[int]:
    port = free_port()
    server = DNSServer(_Outside(), port=port, address="127.0.0.1")
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield port
    server.server.shutdown()


async def test_a_container_resolves_peers_through_the_agents_dns(
    etcd_endpoints: str, prefix: str, docker_image: str, upstream: int
) -> None:
    ip, node = "127.0.0.42", "dnsnode42"
    state_dir = Path(tempfile.mkdtemp(prefix="daprdockr-dns-"))
    proc = spawn(
        [str(BIN / "daprdockr"), "--etcd", etcd_endpoints, "--prefix", prefix, "agent", "--node-id", node,
         "--advertise-ip", ip, "--dns-listen", f"{ip}:53", "--dns-upstream", f"127.0.0.1:{upstream}",
         "--http-listen", "off", "--api-listen", "off", "--state-dir", str(state_dir)],
        log=state_dir.parent / f"{state_dir.name}.log")
    probe = ("while true; do nslookup 1.web.dnsg.container; nslookup outside.test; sleep 0.5; done")
    async with EtcdStore(endpoints=parse_endpoints(etcd_endpoints), schema=KeySchema(prefix)) as store:
        try:
            await eventually(store.snapshot, lambda s: node in s.nodes, timeout=30)
            for args in (["web.dnsg", "--http-port", "8080", "--cmd-json", json.dumps(["sh", "-c", SERVE])],
                         ["probe.dnsg", "--network", "host", "--cmd-json", json.dumps(["sh", "-c", probe])]):
                r = subprocess.run([str(BIN / "daprdockr"), "--etcd", etcd_endpoints, "--prefix", prefix, "svc", "set",
                                    args[0], "--image", docker_image, *args[1:]], capture_output=True, text=True)
                assert r.returncode == 0, r.stderr
            state = await eventually(store.snapshot, lambda s: sum(r.routable for r in s.instances.values()) == 2,
                                     timeout=60)
            client = next(r for r in state.instances.values() if r.service.service == "probe")
            peer = next(r for r in state.instances.values() if r.service.service == "web")
            inspected = json.loads(subprocess.run(["docker", "inspect", client.container_id, peer.container_id],
                                                  capture_output=True, text=True, check=True).stdout)
            assert inspected[0]["HostConfig"]["Dns"] == [ip]
            assert not inspected[1]["HostConfig"]["Dns"]  # on the bridge, 127.0.0.42 would be its own loopback

            def logs() -> str:
                return subprocess.run(["docker", "logs", client.container_id], capture_output=True,
                                      text=True).stdout

            deadline = time.monotonic() + 20
            while not ("Address: 127.0.0.99" in logs() and f"Address: {ip}" in logs()):
                assert time.monotonic() < deadline, logs()[-2000:]
                await asyncio.sleep(0.5)
            text = logs()
            assert "Name:\t1.web.dnsg.container" in text or "Name: 1.web.dnsg.container" in text, text[-2000:]
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
            remove_node_containers([node])
            shutil.rmtree(state_dir, ignore_errors=True)
