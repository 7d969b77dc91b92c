"""The Docker runtime pulls an absent image, from a real local registry (Debian docker-registry).

No public registry is reachable here, so the test runs ``docker-registry`` on a free loopback
port (:mod:`tests.support.registry`), pushes the local busybox test image to it, deletes the
local tag and lets the agent's runtime pull it.  With a login: ``test_private_registry.py``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from daprdockr.adapters.docker_runtime import DockerRuntime
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.errors import ContainerError
from tests.support.registry import registry as local_registry

pytestmark = pytest.mark.docker


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    with local_registry(tmp_path) as served:
        yield served.addr


async def test_absent_image_is_pulled(registry: str, docker_image: str) -> None:
    image = f"{registry}/daprdockr/busybox:pulltest"
    subprocess.run(["docker", "tag", docker_image, image], check=True)
    subprocess.run(["docker", "push", image], check=True, capture_output=True)
    subprocess.run(["docker", "rmi", image], check=True, capture_output=True)
    runtime = DockerRuntime(node_id="pulltest", advertise_ip="127.0.0.1")
    try:
        await runtime.ensure_image(image)
        assert subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0
        spec = ServiceSpec(name=ServiceName(group="t", service="pull"), image=image, http_port=8080,
                           cmd=("httpd", "-f", "-p", "8080", "-h", "/www"))
        info = await runtime.start_instance(spec=spec, number=1)
        assert info.running
        assert dict(info.ports)["8080/tcp"] > 0
        await runtime.remove(info.id, grace=0)
        assert await runtime.list_managed() == []
    finally:
        await runtime.close()
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True)


async def test_missing_image_is_a_clear_error(registry: str) -> None:
    runtime = DockerRuntime(node_id="pulltest", advertise_ip="127.0.0.1")
    try:
        with pytest.raises(ContainerError, match="not available"):
            await runtime.ensure_image(f"{registry}/daprdockr/nope:1")
    finally:
        await runtime.close()


async def test_unreachable_engine_is_translated() -> None:
    from daprdockr.errors import RuntimeUnavailableError

    runtime = DockerRuntime(node_id="x", advertise_ip="127.0.0.1", url="unix:///nonexistent.sock")
    try:
        with pytest.raises(RuntimeUnavailableError):
            await runtime.ping()
    finally:
        await runtime.close()
