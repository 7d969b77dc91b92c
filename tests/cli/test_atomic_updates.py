"""Spec updates are read-modify-write transactions: no lost update, no resurrection (real etcd).

Concurrency is real: separate ``daprdockr`` / ``daprdockrcmd`` processes started together.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.names import ServiceName
from tests.cli.test_cli import BIN, IMG

pytestmark = [pytest.mark.etcd, pytest.mark.slow]
WEB = ServiceName(group="myapp", service="web")


async def _run(*argv: str, etcd: str, prefix: str) -> tuple[int, str]:
    env = {**os.environ, "DAPRDOCKR_ETCD": etcd, "DAPRDOCKR_PREFIX": prefix}
    proc = await asyncio.create_subprocess_exec(
        str(BIN / argv[0]), *argv[1:], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_twenty_concurrent_env_sets_all_land(store: EtcdStore, etcd_endpoints: str, prefix: str) -> None:
    rc, err = await _run("daprdockr", "svc", "set", "web.myapp", "--image", IMG, etcd=etcd_endpoints, prefix=prefix)
    assert rc == 0, err
    results = await asyncio.gather(*(
        _run("daprdockr", "svc", "set", "web.myapp", "--env", f"K_{i}=v{i}", etcd=etcd_endpoints, prefix=prefix)
        for i in range(20)
    ), _run("daprdockr", "svc", "set", "web.myapp", "--instances", "5", etcd=etcd_endpoints, prefix=prefix))
    assert all(rc == 0 for rc, _ in results), [e for rc, e in results if rc]
    spec = await VersionStore(store).get_service(WEB)
    assert spec is not None
    assert dict(spec.env) == {f"K_{i}": f"v{i}" for i in range(20)}, "an update was lost"
    assert spec.instances == 5


@pytest.mark.parametrize("tool", ["daprdockr", "daprdockrcmd"])
async def test_delete_racing_a_merge_never_resurrects(
    store: EtcdStore, etcd_endpoints: str, prefix: str, tool: str
) -> None:
    run = {"etcd": etcd_endpoints, "prefix": prefix}
    if tool == "daprdockr":
        merge = ("daprdockr", "svc", "set", "web.myapp", "--instances", "4")
        delete = ("daprdockr", "svc", "del", "web.myapp")
    else:
        merge = ("daprdockrcmd", "-svc", "web.myapp", "-set", "-instances", "4", f"-etcd={etcd_endpoints}",
                 f"-prefix={prefix}")
        delete = ("daprdockrcmd", "-svc", "web.myapp", "-del", f"-etcd={etcd_endpoints}", f"-prefix={prefix}")
    for _ in range(6):
        rc, err = await _run("daprdockr", "svc", "set", "web.myapp", "--image", IMG, "--instances", "1", **run)
        assert rc == 0, err
        await asyncio.gather(_run(*merge, **run), _run(*delete, **run))
        # whatever the order, the service is gone: a merge after the delete has no image to merge onto
        spec = await VersionStore(store).get_service(WEB)
        assert spec is None, f"deleted service came back: {json.dumps(spec.to_dict()) if spec else ''}"
