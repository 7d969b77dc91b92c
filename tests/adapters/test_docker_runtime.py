"""The Docker runtime's container config, checked on a real container with ``docker inspect``."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from daprdockr.adapters.docker_runtime import DockerRuntime
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName

pytestmark = pytest.mark.docker


async def test_containers_run_without_new_privileges_and_with_only_our_labels(docker_image: str) -> None:
    runtime = DockerRuntime(node_id="sec1", advertise_ip="127.0.0.11")
    spec = ServiceSpec.from_dict({"image": docker_image, "labels": {"team": "a"}, "http_port": 8080,
                                  "cmd": ["httpd", "-f", "-p", "8080"]}, name=ServiceName(group="sec", service="web"))
    info = await runtime.start_instance(spec=spec, number=1)
    try:
        inspected = json.loads(subprocess.run(["docker", "inspect", info.id], capture_output=True, text=True,
                                              check=True).stdout)[0]
        assert "no-new-privileges" in (inspected["HostConfig"]["SecurityOpt"] or [])
        labels = inspected["Config"]["Labels"]
        assert labels["team"] == "a" and labels["daprdockr.node"] == "sec1"
        bindings = inspected["HostConfig"]["PortBindings"]["8080/tcp"]
        assert [b["HostIp"] for b in bindings] == ["127.0.0.11"]
    finally:
        await runtime.remove(info.id, grace=0)
        await runtime.close()


async def test_health_probes_run_in_the_container_and_read_the_images_healthcheck(docker_image: str) -> None:
    """``cmd`` checks run in the container (exit code), ``docker`` checks read the HEALTHCHECK
    status of an image that has one (built here with ``docker commit --change``), and a start
    beside the current container gets a name of its own."""
    runtime = DockerRuntime(node_id="hc1", advertise_ip="127.0.0.11")
    base = subprocess.run(["docker", "run", "-d", docker_image, "sleep", "1"], capture_output=True, text=True,
                          check=True).stdout.strip()
    image = "daprdockr-test/healthcheck:latest"
    subprocess.run(["docker", "commit", "--change", 'HEALTHCHECK --interval=1s --retries=1 CMD ["sh", "-c", '
                    '"test -f /tmp/ok"]', base, image], capture_output=True, check=True)
    subprocess.run(["docker", "rm", "-f", base], capture_output=True)
    name = ServiceName(group="hc", service="web")
    spec = ServiceSpec.from_dict({"image": image, "cmd": ["sleep", "300"], "health": "docker"}, name=name)
    info = await runtime.start_instance(spec=spec, number=1)
    beside = await runtime.start_instance(spec=spec, number=1, beside=True)
    try:
        assert info.id != beside.id and (await runtime.inspect(beside.id)) is not None
        assert await runtime.exec_ok(info.id, ["sh", "-c", "test -d /tmp"], within=5)
        assert not await runtime.exec_ok(info.id, ["sh", "-c", "exit 3"], within=5)
        assert not await runtime.exec_ok(info.id, ["sleep", "10"], within=0.5)  # too slow: failed
        assert await runtime.docker_health(info.id) in ("starting", "unhealthy")
        subprocess.run(["docker", "exec", info.id, "sh", "-c", "touch /tmp/ok"], check=True)
        for _ in range(50):
            if await runtime.docker_health(info.id) == "healthy":
                break
            await asyncio.sleep(0.2)
        assert await runtime.docker_health(info.id) == "healthy"
    finally:
        for cid in (info.id, beside.id):
            await runtime.remove(cid, grace=0)
        assert await runtime.inspect(info.id) is None
        await runtime.close()
