"""Shared fixtures: a real etcd server per test session, per-test key prefixes, Docker checks.

Real-service tests are marked (``etcd``, ``docker``, ``nginx``).  When the services are missing
they are skipped locally, but with ``DAPRDOCKR_REQUIRE_SERVICES=1`` (set by ``make test`` and
CI) a missing service is an error, so CI can never pass by skipping the real tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from tests.support.procs import EtcdCluster

REQUIRE = os.environ.get("DAPRDOCKR_REQUIRE_SERVICES") == "1"
TEST_IMAGE = "daprdockr-test/busybox:latest"
ROOT = Path(__file__).resolve().parent.parent


def missing(what: str) -> None:
    if REQUIRE:
        pytest.fail(f"required service missing: {what}")
    pytest.skip(f"{what} not available")


@pytest.fixture
def root() -> None:
    """The test needs root (to chown, or for nginx to switch users): skipped without it locally, an
    error under DAPRDOCKR_REQUIRE_SERVICES (CI runs as root, so it never passes by skipping)."""
    if os.geteuid() != 0:
        missing("root")


@pytest.fixture(scope="session")
def etcd_endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Comma list of client URLs of a real etcd (started here unless DAPRDOCKR_TEST_ETCD is set)."""
    external = os.environ.get("DAPRDOCKR_TEST_ETCD")
    if external:
        yield external
        return
    if not shutil.which("etcd"):
        missing("etcd binary")
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"), size=1)
    cluster.start()
    try:
        yield cluster.endpoints
    finally:
        cluster.stop()


@pytest.fixture
def prefix() -> str:
    """A fresh key prefix per test, so tests sharing one etcd never see each other's keys."""
    return f"/t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def store(etcd_endpoints: str, prefix: str) -> AsyncIterator[EtcdStore]:
    async with EtcdStore(
        endpoints=parse_endpoints(etcd_endpoints), schema=KeySchema(prefix), timeout=3.0
    ) as s:
        yield s


@pytest.fixture(scope="session")
def docker_image() -> str:
    """The locally built busybox test image (built on first use)."""
    if not shutil.which("docker") or subprocess.run(["docker", "info"], capture_output=True).returncode:
        missing("Docker engine")
    subprocess.run(["bash", str(ROOT / "scripts/build-test-image.sh"), TEST_IMAGE], check=True)
    return TEST_IMAGE
