"""Hostile input through the command line, as real processes against a real etcd."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.core.jsondata import dumps
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from tests.cli.test_cli import IMG, run_bin

pytestmark = pytest.mark.etcd


def test_text_from_etcd_is_shown_as_text(etcd_endpoints: str, prefix: str) -> None:
    evil = "[bold red]pwned[/bold red]\x1b[2J\x1b]0;title\x07\r"
    rec = InstanceRecord(service=ServiceName(group="myapp", service="web"), number=1, node="n9", address="127.0.0.19",
                         state="failed", error=evil, since=time.time())

    asyncio.run(_with_store(etcd_endpoints, prefix, rec))
    r = run_bin("daprdockr", "ps", etcd=etcd_endpoints, prefix=prefix)
    assert r.returncode == 0, r.stderr
    assert "[bold red]pwned[/bold red]" in r.stdout  # the markup is printed, not interpreted
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "\r" not in r.stdout
    assert "\\x1b[2J" in r.stdout
    rows = json.loads(run_bin("daprdockr", "ps", "--json", etcd=etcd_endpoints, prefix=prefix).stdout)
    assert rows[0]["error"] == evil  # JSON keeps the exact value (escaped by the JSON encoder)


async def _with_store(etcd: str, prefix: str, rec: InstanceRecord) -> None:
    from daprdockr.core.endpoints import parse_endpoints
    from daprdockr.core.keys import KeySchema

    async with EtcdStore(endpoints=parse_endpoints(etcd), schema=KeySchema(prefix)) as s:
        lease = await s.grant_lease(60)
        await s.put_raw(f"{prefix}/instances/myapp/web/1", dumps(rec.to_dict()), lease=lease)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["svc", "set", "web.myapp", "--image", IMG, "--http-host", "x\n.com", "--http-port", "80"], "http_host"),
        (["svc", "set", "web.myapp", "--image", IMG + "\n"], "image"),
        (["svc", "set", "web.myapp", "--image", IMG, "--label", "com.docker.compose.project=x"], "reserved"),
        (["svc", "set", "web.myapp", "--image", IMG, "--label", "daprdockr.node=n1"], "reserved"),
        (["svc", "set", "web.myapp", "--image", IMG, "--env", "A\n=1"], "env"),
        (["agent", "--advertise-ip", "0.0.0.0"], "--advertise-ip"),
        (["agent", "--advertise-ip", "224.0.0.1"], "--advertise-ip"),
    ],
)
def test_bad_input_is_refused_with_one_clear_line(etcd_endpoints: str, prefix: str, args: list[str],
                                                  message: str) -> None:
    r = run_bin("daprdockr", *args, etcd=etcd_endpoints, prefix=prefix)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("daprdockr: ") and message in lines[0], r.stderr
    assert run_bin("daprdockr", "svc", "get", "web.myapp", etcd=etcd_endpoints, prefix=prefix).returncode == 3
