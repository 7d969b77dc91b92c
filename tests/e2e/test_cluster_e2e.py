"""End to end on a real local cluster: 3 etcd members, 3 agent processes with DNS and nginx."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.localcluster import dig, docker_instances, local_cluster, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.etcd, pytest.mark.docker, pytest.mark.nginx]
CMD = json.dumps(["sh", "-c", "echo $DAPRDOCKR_INSTANCE > /www/id; exec httpd -f -p 8080 -h /www"])


def http_get(ip: str, port: int, host: str, path: str = "/id") -> tuple[int, str]:
    req = urllib.request.Request(f"http://{ip}:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            return resp.status, resp.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_six_instances_spread_resolved_and_routed_everywhere(tmp_path: Path, docker_image: str) -> None:
    with local_cluster(tmp_path, prefix="e", etcd_base=25000) as c:
        nodes = list(c.nodes)
        c.cli("svc", "set", "web.myapp", "--image", docker_image, "--instances", "6", "--http-host",
              "web.example.com", "--http-port", "8080", "--cmd-json", CMD, "--wait", "--timeout", "60")
        # every instance runs exactly once, spread 2/2/2
        running = docker_instances(nodes)
        assert sorted(running, key=int) == [str(n) for n in range(1, 7)]
        assert all(len(v) == 1 for v in running.values())
        assert sorted(Counter(v[0][0] for v in running.values()).values()) == [2, 2, 2]
        owners = {str(row["instance"]): row["address"] for row in c.instances()}
        for ip in c.nodes.values():
            # DNS on every agent
            assert dig(ip, c.dns_port, "+short", "1.web.myapp.container").split() == [owners["1"]]
            srv = dig(ip, c.dns_port, "+short", "_8080._tcp.web.myapp.container", "SRV").strip().splitlines()
            assert len(srv) == 6
            # nginx on every agent reaches all instances
            seen: set[str] = set()

            def all_seen(ip: str = ip, seen: set[str] = seen) -> bool:
                status, body = http_get(ip, c.http_port, "web.example.com")
                if status == 200:
                    seen.add(body)
                return len(seen) == 6

            wait_until(all_seen, timeout=15, interval=0.01, what=f"all instances through nginx on {ip}")
            assert http_get(ip, c.http_port, "unknown.example.com")[0] == 404
        # daprdockrcmd with the seed flags against this cluster
        r = c.cli("svc", "get", "web.myapp")
        assert json.loads(r.stdout)["instances"] == 6
        # delete: everything goes away
        c.cli("svc", "del", "web.myapp")
        wait_until(lambda: not docker_instances(nodes), timeout=30, what="containers removed")
        for ip in c.nodes.values():
            wait_until(lambda ip=ip: "NXDOMAIN" in dig(ip, c.dns_port, "1.web.myapp.container"), timeout=5,
                       what="NXDOMAIN")
            wait_until(lambda ip=ip: http_get(ip, c.http_port, "web.example.com")[0] == 404, timeout=5,
                       what="nginx route removed")
        # the agents' logs stay clean of gRPC's fork noise (DNS workers and `nginx -t` are started
        # from a process with gRPC channels open)
        for i in (1, 2, 3):
            log = (c.dir / f"agent-n{i}.log").read_text(errors="replace")
            assert "fork" not in log and "Traceback" not in log, log[-2000:]


def test_cluster_down_stops_the_nginx_of_a_killed_agent(tmp_path: Path) -> None:
    import os
    import subprocess

    with local_cluster(tmp_path, prefix="k", etcd_base=25100) as c:
        nginx = c.nginx_pid("k1")
        assert nginx is not None
        c.kill("agent-n1")  # SIGKILL: the agent cannot stop its nginx
        wait_until(lambda: not c.alive("agent-n1"), timeout=5, what="agent gone")
        os.kill(nginx, 0)  # its nginx is still there, holding the port
        subprocess.run(["bash", str(c_script()), "down"], env=c.env, check=True, capture_output=True, timeout=120)
        wait_until(lambda: not _alive(nginx), timeout=5, what="nginx of the killed agent stopped by cluster-down")


def c_script() -> Path:
    from tests.e2e.localcluster import SCRIPT

    return SCRIPT


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
