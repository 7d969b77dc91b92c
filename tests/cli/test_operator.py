"""Operator commands as real processes against a running agent (real etcd, Docker, agent API):
``svc set --wait`` success and timeout, ``status``/``nodes``/``ps`` JSON shapes, ``logs``."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.jsondata import dumps
from daprdockr.core.keys import KeySchema
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from tests.agent.cluster import local_cluster
from tests.cli.test_cli import BIN, run_bin
from tests.support.procs import free_port

pytestmark = [pytest.mark.etcd, pytest.mark.docker]
CMD = '["sh", "-c", "echo hello-from-$DAPRDOCKR_INSTANCE; exec sleep 3600"]'


async def cli(*args: str, etcd: str, prefix: str) -> tuple[int, str, str]:
    """Run ``daprdockr`` in a thread: the agent under test shares this event loop."""
    done = await asyncio.to_thread(run_bin, "daprdockr", *args, etcd=etcd, prefix=prefix)
    return done.returncode, done.stdout, done.stderr


async def test_wait_status_nodes_ps_and_logs(etcd_endpoints: str, prefix: str, docker_image: str,
                                             tmp_path: Path) -> None:
    api = ("127.0.0.11", free_port("127.0.0.11"))
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=1,
                             per_node=lambda i, ip: {"api_listen": api}):
        run = {"etcd": etcd_endpoints, "prefix": prefix}
        rc, out, err = await cli("svc", "set", "web.myapp", "--image", docker_image, "--instances", "2",
                                 "--cmd-json", CMD, "--wait", "--timeout", "60", **run)
        assert rc == 0, err
        assert "2/2" in out + err  # the plain (non-TTY) progress lines

        rc, out, _ = await cli("status", "--json", **run)
        status = json.loads(out)
        assert rc == 0 and [n["node"] for n in status["nodes"]] == ["n1"]
        assert status["services"][0] | {"desired": 2, "running": 2} == status["services"][0]

        rc, out, _ = await cli("nodes", "--json", **run)
        assert rc == 0 and json.loads(out)[0]["instances"] == 2 and json.loads(out)[0]["api"] == f"{api[0]}:{api[1]}"
        assert json.loads(out)[0]["capacity"] == "unlimited"

        rc, out, _ = await cli("ps", "web.myapp", "--json", **run)
        assert rc == 0
        rows = json.loads(out)
        assert sorted(r["instance"] for r in rows) == [1, 2]
        assert set(rows[0]) >= {"service", "instance", "node", "address", "ports", "state", "age", "container_id"}
        assert {r["state"] for r in rows} == {"running"}

        rc, out, err = await cli("logs", "web.myapp", "-n", "2", **run)
        assert rc == 0, err
        assert "hello-from-2" in out


async def test_wait_timeout_names_the_failure_and_node(etcd_endpoints: str, prefix: str, tmp_path: Path) -> None:
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=1):
        rc, _, err = await cli("svc", "set", "bad.myapp", "--image", "daprdockr-test/absent:nope", "--instances", "1",
                               "--wait", "--timeout", "6", etcd=etcd_endpoints, prefix=prefix)
        assert rc == 5, err
        last = err.strip().splitlines()[-1]
        assert last.startswith("daprdockr: ") and "n1" in last and "daprdockr-test/absent:nope" in last, err


async def test_watch_json_follows_etcd_events(etcd_endpoints: str, prefix: str) -> None:
    """``watch --json`` prints a new snapshot line on each etcd change (driven by the watch)."""
    store = EtcdStore(endpoints=parse_endpoints(etcd_endpoints), schema=KeySchema(prefix))
    env = {**os.environ, "DAPRDOCKR_ETCD": etcd_endpoints, "DAPRDOCKR_PREFIX": prefix}
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "daprdockr"), "watch", "--json", env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
        assert first["instances"] == []
        rec = InstanceRecord(service=ServiceName(group="myapp", service="web"), number=1, node="n9",
                             address="127.0.0.19", state="running", since=time.time())
        async with store:
            lease = await store.grant_lease(30)  # instance keys live on an agent's lease
            await store.put_raw(f"{prefix}/instances/myapp/web/1", dumps(rec.to_dict()), lease=lease)
        line = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
        assert line["revision"] > first["revision"]
        assert [(r["service"], r["instance"], r["node"]) for r in line["instances"]] == [("web.myapp", 1, "n9")]
    finally:
        proc.kill()
        await proc.wait()


async def test_an_api_beyond_loopback_makes_its_token_and_daprdockr_logs_sends_it(
    etcd_endpoints: str, prefix: str, docker_image: str, tmp_path: Path
) -> None:
    """An agent whose API listens beyond loopback generates its bearer token on first start (0600,
    in its private state dir); ``daprdockr logs`` gets the logs with ``--api-token-file`` and a
    one-line error naming the option without it."""
    port = free_port("127.0.0.1")
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=1, node_prefix="tk",
                             per_node=lambda i, ip: {"api_listen": ("0.0.0.0", port)}):
        token = tmp_path / "api-token"
        assert token.is_file() and token.stat().st_mode & 0o777 == 0o600 and len(token.read_text().strip()) >= 32
        run = {"etcd": etcd_endpoints, "prefix": prefix}
        rc, _, err = await cli("svc", "set", "web.myapp", "--image", docker_image, "--cmd-json", CMD, "--wait",
                               "--timeout", "60", **run)
        assert rc == 0, err
        rc, out, err = await cli("logs", "web.myapp", "-n", "1", "--api-token-file", str(token), **run)
        assert rc == 0 and "hello-from-1" in out, err
        rc, out, err = await cli("logs", "web.myapp", "-n", "1", **run)  # this user's default holds no token
        assert rc != 0 and "--api-token-file" in err and len(err.strip().splitlines()) == 1, err


def test_the_local_token_never_goes_to_another_host(tmp_path: Path) -> None:
    from daprdockr.clikit.logs import client_token, on_this_host

    token = tmp_path / "t"
    token.write_text("x" * 32 + "\n")
    assert on_this_host("127.0.0.11:7400") and on_this_host("0.0.0.0:7400") and on_this_host("[::1]:7400")
    assert not on_this_host("192.0.2.7:7400") and not on_this_host("api.example.com:7400")
    assert client_token(None, api="192.0.2.7:7400") == ""  # not even looked for
    assert client_token(token, api="192.0.2.7:7400") == "x" * 32  # given explicitly: the operator's choice
