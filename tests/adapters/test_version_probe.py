"""Version probes against real binaries and servers: a missing binary says "not found", a slow one
is cut off at its limit (its process killed), a real etcd server and engine answer."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.version_probe import command_probe, docker_engine_probe, etcd_server_probe
from daprdockr.clikit.versions import collect
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from tests.conftest import ROOT
from tests.support.procs import free_port


def fake_tool(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


async def test_a_missing_binary_is_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    probe = await command_probe("etcd", ["etcd", "--version"], extra_dirs=())
    assert (probe.version, probe.problem, probe.source) == (None, "not on PATH", "etcd --version")


async def test_a_slow_binary_is_cut_off_and_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = tmp_path / "pid"
    fake_tool(tmp_path / "bin", "nginx", f"echo $$ > {pid_file}; exec {shutil.which('sleep')} 60")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    t0 = time.monotonic()
    probe = await command_probe("nginx", ["nginx", "-v"], limit=0.5, extra_dirs=())
    took = time.monotonic() - t0
    assert probe.version is None
    assert probe.problem == "timed out after 0.5s"
    assert 0.4 < took < 3.0, took
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 3
    while Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, "the probed process outlived its probe"
        time.sleep(0.05)


async def test_a_binary_without_a_version_says_what_it_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tool(tmp_path / "bin", "etcdctl", "echo 'Error: boom' >&2; exit 3")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    probe = await command_probe("etcdctl", ["etcdctl", "version"], extra_dirs=())
    assert (probe.version, probe.problem) == (None, "exited 3: Error: boom")


async def test_real_binaries_answer() -> None:
    for tool, argv in (("etcd", ["etcd", "--version"]), ("nginx", ["nginx", "-v"])):
        binary = shutil.which(argv[0]) or shutil.which(argv[0], path="/usr/sbin")
        if binary is None:
            pytest.skip(f"{argv[0]} not installed")
        expected = subprocess.run([binary, *argv[1:]], capture_output=True, text=True, timeout=10)
        probe = await command_probe(tool, argv)
        assert probe.version is not None, probe
        assert probe.version in expected.stdout + expected.stderr


@pytest.mark.etcd
async def test_the_etcd_server_reports_its_version(etcd_endpoints: str) -> None:
    store = EtcdStore(endpoints=parse_endpoints(etcd_endpoints), schema=KeySchema("/v"), timeout=2.0)
    probe = await etcd_server_probe(store)
    etcd = subprocess.run(["etcd", "--version"], capture_output=True, text=True, timeout=10).stdout
    assert probe.version is not None and f"etcd Version: {probe.version}" in etcd, (probe, etcd)
    assert probe.source == f"server at {etcd_endpoints}"


async def test_an_unreachable_etcd_server_is_cut_off() -> None:
    port = free_port()  # nothing listens there
    store = EtcdStore(endpoints=parse_endpoints(f"http://127.0.0.1:{port}"), schema=KeySchema("/v"), timeout=5.0)
    t0 = time.monotonic()
    probe = await etcd_server_probe(store, limit=0.5)
    assert probe.version is None and probe.problem
    assert time.monotonic() - t0 < 3.0


async def test_a_docker_socket_where_nothing_listens(tmp_path: Path) -> None:
    probe = await docker_engine_probe(url=f"unix://{tmp_path}/none.sock", limit=1.0)
    assert (probe.version, probe.problem) == (None, "no such socket"), probe
    with socket.socket(socket.AF_UNIX) as listener:  # a socket that accepts and never answers
        listener.bind(str(tmp_path / "mute.sock"))
        listener.listen()
        t0 = time.monotonic()
        probe = await docker_engine_probe(url=f"unix://{tmp_path}/mute.sock", limit=0.5)
        assert (probe.version, probe.problem) == (None, "timed out after 0.5s"), probe
        assert time.monotonic() - t0 < 3.0


async def test_collect_reports_not_found_for_every_missing_tool(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    monkeypatch.setattr("daprdockr.adapters.version_probe.EXTRA_DIRS", ())
    got = {c.name: c for c in await collect(store=None, limit=1.0)}
    assert got["daprdockr"].version is not None
    for name in ("etcd", "docker", "nginx"):
        assert got[name].version is None, got[name]
        assert "not on PATH" in got[name].source, got[name]
        assert got[name].line().split(None, 1)[1].startswith("not found ("), got[name].line()


def test_the_cli_prints_the_report(etcd_endpoints: str) -> None:
    for argv in (["version"], ["--version"]):
        out = subprocess.run([sys.executable, "-m", "daprdockr", "--etcd", etcd_endpoints, *argv],
                             capture_output=True, text=True, timeout=60, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert out.returncode == 0, out.stderr
        lines = {line.split()[0]: line for line in out.stdout.splitlines()}
        assert set(lines) == {"daprdockr", "etcd", "docker", "nginx"}, out.stdout
        import daprdockr
        assert lines["daprdockr"].split()[1] == daprdockr.__version__
        assert f"(server at {etcd_endpoints})" in lines["etcd"], lines["etcd"]
