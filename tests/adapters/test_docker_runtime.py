"""The Docker runtime's container config, checked on a real container with ``docker inspect``."""

from __future__ import annotations

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
