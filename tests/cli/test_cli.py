"""The daprdockr CLI against a real etcd: round trips, merging, files, exit codes, errors."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.cli.main import app
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema

pytestmark = pytest.mark.etcd
BIN = Path(sys.executable).parent
IMG = "daprdockr-test/busybox:latest"


def run_bin(
    name: str, *args: str, etcd: str, prefix: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DAPRDOCKR_ETCD": etcd, "DAPRDOCKR_PREFIX": prefix}
    return subprocess.run([str(BIN / name), *args], input=stdin, capture_output=True, text=True, env=env, timeout=60)


def test_round_trip_set_get_ls_del_as_real_process(etcd_endpoints: str, prefix: str) -> None:
    r = run_bin("daprdockr", "svc", "set", "web.myapp", "--image", IMG, "--instances", "3", "--http-host",
                "Web.Example.com", "--http-port", "9000", "--cmd", "httpd", "--cmd", "-f", "--env", "A=1",
                etcd=etcd_endpoints, prefix=prefix)
    assert r.returncode == 0, r.stderr
    got = json.loads(run_bin("daprdockr", "svc", "get", "web.myapp", etcd=etcd_endpoints, prefix=prefix).stdout)
    assert got["instances"] == 3 and got["http_host"] == "web.example.com" and got["cmd"] == ["httpd", "-f"]
    assert got["env"] == {"A": "1"}
    ls = run_bin("daprdockr", "svc", "ls", etcd=etcd_endpoints, prefix=prefix)
    assert "web.myapp" in ls.stdout and "web.example.com" in ls.stdout
    rows = json.loads(run_bin("daprdockr", "svc", "ls", "--json", etcd=etcd_endpoints, prefix=prefix).stdout)
    assert rows == [{"service": "web.myapp", "image": IMG, "desired": 3, "running": 0, "failed": 0, "paused": 0,
                     "http_host": "web.example.com", "deleted": False, "status": "ok", "invalid": ""}]
    assert run_bin("daprdockr", "svc", "del", "web.myapp", etcd=etcd_endpoints, prefix=prefix).returncode == 0
    gone = run_bin("daprdockr", "svc", "get", "web.myapp", etcd=etcd_endpoints, prefix=prefix)
    assert gone.returncode == 3 and gone.stderr.strip() == "daprdockr: service web.myapp not found"
    assert run_bin("daprdockr", "svc", "del", "web.myapp", etcd=etcd_endpoints, prefix=prefix).returncode == 3


def test_python_dash_m_works(etcd_endpoints: str, prefix: str) -> None:
    env = {**os.environ, "DAPRDOCKR_ETCD": etcd_endpoints, "DAPRDOCKR_PREFIX": prefix}
    r = subprocess.run([sys.executable, "-m", "daprdockr", "svc", "ls", "--json"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout) == []


def test_merge_scales_without_repeating_image(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("svc", "set", "web.myapp", "--image", IMG, "--env", "A=1").exit_code == 0
    assert cli("svc", "set", "web.myapp", "--instances", "5", "--env", "B=2").exit_code == 0
    got = json.loads(cli("svc", "get", "web.myapp").stdout)
    assert (got["image"], got["instances"], got["env"]) == (IMG, 5, {"A": "1", "B": "2"})


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_set_from_file_and_stdin(cli, tmp_path: Path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    doc = {"name": "api.myapp", "image": IMG, "instances": 2, "cmd": ["sh", "-c", "echo hi"], "ports": [53, "54/udp"]}
    text = json.dumps(doc) if fmt == "json" else "\n".join(
        ["name: api.myapp", f"image: {IMG}", "instances: 2", "cmd: [sh, -c, echo hi]", "ports: [53, 54/udp]"])
    f = tmp_path / f"spec.{fmt}"
    f.write_text(text)
    assert cli("svc", "set", "-f", str(f)).exit_code == 0
    got = json.loads(cli("svc", "get", "api.myapp").stdout)
    assert got["cmd"] == ["sh", "-c", "echo hi"] and got["ports"] == ["53/tcp", "54/udp"]
    r = cli("svc", "set", "other.myapp", "-f", "-", input=text.replace("api.myapp", "other.myapp"))
    assert r.exit_code == 0, r.output
    assert json.loads(cli("svc", "get", "other.myapp").stdout)["instances"] == 2


INVALID = [
    (["svc", "set", "web", "--image", IMG], "service name"),
    (["svc", "set", "Web.myapp", "--image", IMG], "DNS label"),
    (["svc", "set", "web.my_app", "--image", IMG], "DNS label"),
    (["svc", "set", "web-.myapp", "--image", IMG], "DNS label"),
    (["svc", "set", ("a" * 64) + ".myapp", "--image", IMG], "longer than 63"),
    (["svc", "set", "web.a.b", "--image", IMG], "<service>.<group>"),
    (["svc", "set", "web.myapp"], "image"),
    (["svc", "set", "web.myapp", "--image", "Bad Image!"], "image"),
    (["svc", "set", "web.myapp", "--image", IMG, "--instances", "-1"], "instances"),
    (["svc", "set", "web.myapp", "--image", IMG, "--http-host", "a.com;evil", "--http-port", "80"], "http_host"),
    (["svc", "set", "web.myapp", "--image", IMG, "--http-host", "a b", "--http-port", "80"], "http_host"),
    (["svc", "set", "web.myapp", "--image", IMG, "--http-host", "{", "--http-port", "80"], "http_host"),
    (["svc", "set", "web.myapp", "--image", IMG, "--http-host", "x.example.com"], "http_port"),
    (["svc", "set", "web.myapp", "--image", IMG, "--http-host", "x.com", "--http-port", "70000"], "http_port"),
    (["svc", "set", "web.myapp", "--image", IMG, "--env", "1BAD=x"], "env"),
    (["svc", "set", "web.myapp", "--image", IMG, "--env", "NOEQUALS"], "env"),
    (["svc", "set", "web.myapp", "--image", IMG, "--port", "99999"], "ports"),
    (["svc", "set", "web.myapp", "--image", IMG, "--port", "53/sctp"], "ports"),
    (["svc", "set", "web.myapp", "--image", IMG, "--cmd-json", "not json"], "cmd"),
    (["svc", "get", "UPPER.myapp"], "DNS label"),
    (["agent", "--node-id", "n1", "--dns-workers", "99"], "--dns-workers"),
    (["agent", "--node-id", "n1", "--ttl", "0"], "--ttl"),
]


@pytest.mark.parametrize(("args", "needle"), INVALID, ids=[" ".join(a)[:60] for a, _ in INVALID])
def test_invalid_input_exits_2_with_one_line(cli, args: list[str], needle: str) -> None:  # type: ignore[no-untyped-def]
    r = cli(*args)
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("daprdockr: ") and needle in lines[0]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"image": "busybox", "bogus": 1}', "bogus"),
        ('{"image": "busybox",', "invalid JSON at line 1"),
        ("image: [busybox\n", "invalid YAML at line 2"),
        ("- 1\n- 2\n", "must be a mapping"),
        ("", "empty spec"),
    ],
)
def test_bad_files_exit_2_naming_the_problem(cli, text: str, needle: str) -> None:  # type: ignore[no-untyped-def]
    r = cli("svc", "set", "web.myapp", "-f", "-", input=text)
    assert r.exit_code == 2 and needle in r.output


def test_unreachable_etcd_exits_4_quickly_naming_endpoints(prefix: str) -> None:
    t0 = time.monotonic()
    r = run_bin("daprdockr", "svc", "ls", etcd="http://127.0.0.1:1,http://127.0.0.1:2", prefix=prefix)
    assert time.monotonic() - t0 < 10
    assert r.returncode == 4
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "http://127.0.0.1:1" in lines[0] and "http://127.0.0.1:2" in lines[0]


def test_garbage_in_etcd_does_not_break_listing(cli, etcd_endpoints: str, prefix: str) -> None:  # type: ignore[no-untyped-def]
    assert cli("svc", "set", "web.myapp", "--image", IMG).exit_code == 0

    async def put_garbage() -> None:
        async with EtcdStore(endpoints=parse_endpoints(etcd_endpoints), schema=KeySchema(prefix)) as store:
            await store.put_raw(f"{prefix}/services/myapp/broken", b"{nope")
            await store.put_raw(f"{prefix}/instances/myapp/web/1", b'{"node": 5}')

    asyncio.run(put_garbage())
    r = cli("svc", "ls", "--json")
    assert r.exit_code == 0
    rows = {row["service"]: row for row in json.loads(r.stdout)}
    assert sorted(rows) == ["broken.myapp", "web.myapp"]
    assert rows["web.myapp"]["status"] == "ok"
    assert rows["broken.myapp"]["status"] == "invalid" and "not JSON" in rows["broken.myapp"]["invalid"]
    table = cli("svc", "ls")
    assert table.exit_code == 0 and "invalid" in table.stdout
    status = json.loads(cli("status", "--json").stdout)
    assert len(status["skipped_keys"]) == 2
    broken = cli("svc", "status", "broken.myapp")
    assert broken.exit_code == 3
    assert json.loads(broken.stdout)["status"] == "invalid" and "not JSON" in json.loads(broken.stdout)["reason"]


def test_help_has_examples() -> None:
    runner = CliRunner()
    for args in (["svc", "set"], ["svc", "get"], ["svc", "del"], ["svc", "ls"], ["status"], ["ps"], ["nodes"],
                 ["watch"], ["logs"], ["agent"], ["dns"]):
        r = runner.invoke(app, [*args, "--help"])
        assert r.exit_code == 0 and "Example" in r.output, args


def test_container_flags_round_trip_as_real_processes(etcd_endpoints: str, prefix: str) -> None:
    r = run_bin("daprdockr", "svc", "set", "web.myapp", "--image", IMG, "--memory", "64m", "--user", "65534:65534",
                "--workdir", "/srv/app/", "--entrypoint", "/bin/sh", "--entrypoint", "-c", "--hostname", "web-1.local",
                "--cpus", "0.5", "--cpu-shares", "256", "--pids-limit", "64", "--volume", "/cache",
                "--volume", "data:/data:ro", "--network", "none", etcd=etcd_endpoints, prefix=prefix)
    assert r.returncode == 0, r.stderr
    fields = ("memory", "user", "workdir", "entrypoint", "hostname", "cpus", "cpu_shares", "pids_limit", "volumes",
              "network")
    expected = {"memory": 64 * 1024**2, "user": "65534:65534", "workdir": "/srv/app", "entrypoint": ["/bin/sh", "-c"],
                "hostname": "web-1.local", "cpus": 0.5, "cpu_shares": 256, "pids_limit": 64,
                "volumes": ["/cache", "data:/data:ro"], "network": "none"}

    def stored() -> dict[str, object]:
        got = json.loads(run_bin("daprdockr", "svc", "get", "web.myapp", etcd=etcd_endpoints, prefix=prefix).stdout)
        return {k: got.get(k) for k in fields}

    assert stored() == expected
    # one flag changes one field; a bad value is refused naming the field and changes nothing
    assert run_bin("daprdockr", "svc", "set", "web.myapp", "--memory", "1g", etcd=etcd_endpoints,
                   prefix=prefix).returncode == 0
    assert stored() == {**expected, "memory": 1024**3}
    bad = run_bin("daprdockr", "svc", "set", "web.myapp", "--memory", "1k", "--user", "x", etcd=etcd_endpoints,
                  prefix=prefix)
    assert bad.returncode == 2 and "memory" in bad.stderr
    assert stored() == {**expected, "memory": 1024**3}
