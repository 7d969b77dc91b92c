"""``daprdockr apply -f DIR --wait`` on real agents with Docker and nginx: the containers a
directory of specs describes run and serve through nginx; an edited document replaces only that
service's containers (the others keep theirs); ``--prune`` removes the containers of the service no
file names any more.  (The same flow on hollow agents, and the plan's cases against etcd alone, are
in ``tests/e2e/test_apply_hollow.py`` and ``tests/cli/test_apply.py``.)"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.probes import IDENTITY_CMD
from tests.e2e.realcluster import RealCluster, real_cluster

pytestmark = [pytest.mark.slow, pytest.mark.etcd, pytest.mark.docker, pytest.mark.nginx, pytest.mark.timeout(300)]
GROUP = "ap"


@pytest.fixture
def cluster(prefix: str, docker_image: str) -> Iterator[RealCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="daprdockr-ap-"))
    with real_cluster(workdir, prefix=prefix, nodes=2, node_prefix="ap") as c:
        yield c
    shutil.rmtree(workdir, ignore_errors=True)


def doc(service: str, image: str, instances: int, version: str) -> dict[str, Any]:
    return {"name": f"{service}.{GROUP}", "image": image, "instances": instances, "cmd": IDENTITY_CMD,
            "http_port": 8080, "http_host": f"{service}.{GROUP}.test", "env": {"V": version},
            "update": {"min_healthy": "1s", "deadline": "60s"}}


def containers(service: str) -> dict[str, str]:
    """The running containers of one of this test's services: id -> its V environment value."""
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=daprdockr.group={GROUP}",
                          "--filter", f"label=daprdockr.service={service}"],
                         capture_output=True, text=True, check=True).stdout.split()
    out: dict[str, str] = {}
    for cid in ids:
        env = subprocess.run(["docker", "inspect", "-f", "{{json .Config.Env}}", cid], capture_output=True, text=True)
        if env.returncode == 0:  # (else it was removed since docker ps listed it: an old one, drained and gone)
            out[cid] = next((e.split("=", 1)[1] for e in yaml.safe_load(env.stdout) if e.startswith("V=")), "")
    return out


def through_nginx(c: RealCluster, host: str) -> int:
    addr = next(iter(c.agents.values())).addr
    request = urllib.request.Request(f"http://{addr.ip}:{addr.http_port}/id", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_apply_a_directory_to_docker_agents(cluster: RealCluster, docker_image: str, tmp_path: Path) -> None:
    c = cluster
    specs = tmp_path / "specs"
    specs.mkdir()

    def write(name: str, docs: list[dict[str, Any]]) -> None:
        (specs / name).write_text(yaml.safe_dump_all(docs, sort_keys=False))

    write("web.yaml", [doc("web", docker_image, 2, "1")])
    write("api.yaml", [doc("api", docker_image, 1, "1")])
    try:
        first = c.cli("apply", "-f", str(specs), "--wait", "--timeout", "120", timeout=180)
        assert "applied: 2 created" in first.stdout, first.stdout
        web, api = containers("web"), containers("api")
        assert sorted(web.values()) == ["1", "1"] and list(api.values()) == ["1"], (web, api)
        assert through_nginx(c, f"web.{GROUP}.test") == 200 and through_nginx(c, f"api.{GROUP}.test") == 200

        write("web.yaml", [doc("web", docker_image, 2, "2")])  # one document edited: only web is replaced
        plan = c.cli("plan", "-f", str(specs), check=False)
        assert plan.returncode == 2 and f"web.{GROUP}: replaced (env)" in plan.stdout, plan.stdout
        assert f"api.{GROUP}: unchanged" in plan.stdout, plan.stdout
        c.cli("apply", "-f", str(specs), "--wait", "--timeout", "120", timeout=180)
        # (--wait returns once both instances run the new spec; the old containers drain, then stop)
        assert _eventually(lambda: sorted(containers("web").values()) == ["2", "2"], seconds=60), containers("web")
        new_web = containers("web")
        assert not set(new_web) & set(web), (web, new_web)
        assert containers("api") == api  # (untouched: the same container)
        assert through_nginx(c, f"web.{GROUP}.test") == 200

        (specs / "api.yaml").unlink()  # pruned: no file names api any more
        pruned = c.cli("apply", "-f", str(specs), "--prune", "--group", GROUP, "--wait", "--timeout", "120",
                       timeout=180)
        assert f"api.{GROUP}: deleted" in pruned.stdout, pruned.stdout
        assert _eventually(lambda: not containers("api"), seconds=60), containers("api")
        assert containers("web") == new_web
        assert c.cli("plan", "-f", str(specs), "--prune", "--group", GROUP, check=False).returncode == 0
    except BaseException:
        c.dump_logs(30)
        raise


def _eventually(check: Callable[[], bool], *, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return bool(check())
