"""docker-compose.yml is consistent with itself and with the real CLI.

No registry is reachable here, so the compose cluster is not started by the test suite (see
the README, "docker-compose dev cluster", for what was run by hand).  What is checked on every run:

* the three etcd members form one cluster (every member's peer URL is in the shared
  ``--initial-cluster``, names match) and the agents' ``DAPRDOCKR_ETCD`` lists exactly the
  members' client URLs;
* every agent starts from its config file (compose/n1.toml..., mounted): the real ``daprdockr
  agent --config FILE --print-config`` reads it into DNS, nginx and API listeners on the agent's
  own advertise address, with distinct node ids and addresses, the Docker socket mounted and the
  host network;
* ``docker-compose config`` accepts the file (when docker-compose is installed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, missing

COMPOSE = ROOT / "docker-compose.yml"


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def services(compose: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if name.startswith(kind)}


def test_etcd_members_form_one_cluster(compose: dict[str, Any]) -> None:
    members = services(compose, "etcd")
    assert len(members) == 3
    initial = {flag(m["command"], "--initial-cluster") for m in members.values()}
    assert len(initial) == 1
    peers = dict(item.split("=", 1) for item in initial.pop().split(","))
    for m in members.values():
        argv = m["command"]
        assert peers[flag(argv, "--name")] == flag(argv, "--listen-peer-urls")
        assert flag(argv, "--listen-client-urls") == flag(argv, "--advertise-client-urls")
        assert m["network_mode"] == "host"
    clients = sorted(flag(m["command"], "--listen-client-urls") for m in members.values())
    assert clients == ["http://127.0.0.1:5001", "http://127.0.0.1:5002", "http://127.0.0.1:5003"]


def test_agents_start_from_their_config_files_with_the_real_cli(compose: dict[str, Any]) -> None:
    """Each agent runs ``daprdockr agent --config /etc/daprdockr/agent.toml``, a file mounted from
    compose/; the real CLI reads it (``--print-config``, with the agent's environment) into node
    ids, addresses and listeners of the agent's own advertise address."""
    agents = services(compose, "agent")
    etcd_clients = sorted(flag(m["command"], "--listen-client-urls") for m in services(compose, "etcd").values())
    configs = []
    for svc in agents.values():
        assert svc["network_mode"] == "host"
        assert "/var/run/docker.sock:/var/run/docker.sock" in svc["volumes"]
        env = svc["environment"]
        assert sorted(env["DAPRDOCKR_ETCD"].split(",")) == etcd_clients
        mounted = {target.removesuffix(":ro"): source for source, target in
                   (v.split(":", 1) for v in svc["volumes"])}
        path = flag(svc["command"], "--config")
        host_file = ROOT / mounted[path]
        assert host_file.is_file()
        out = subprocess.run([sys.executable, "-m", "daprdockr", "agent", "--config", str(host_file), "--print-config"],
                             capture_output=True, text=True, timeout=60, check=True,
                             env={**os.environ, "DAPRDOCKR_ETCD": env["DAPRDOCKR_ETCD"],
                                  "DAPRDOCKR_PREFIX": env["DAPRDOCKR_PREFIX"]})
        config = tomllib.loads(out.stdout)
        ip = config["advertise_ip"]
        assert ip.startswith("127.0.0.") and config["etcd"] == env["DAPRDOCKR_ETCD"]
        assert (config["dns_listen"], config["http_listen"], config["api_listen"]) == (f"{ip}:53", f"{ip}:80",
                                                                                      f"{ip}:7400")
        configs.append(config)
    assert sorted(c["node_id"] for c in configs) == ["n1", "n2", "n3"]
    assert sorted(c["advertise_ip"] for c in configs) == ["127.0.0.11", "127.0.0.12", "127.0.0.13"]


def test_docker_compose_accepts_the_file() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        missing("docker-compose (apt package docker-compose)")
    result = subprocess.run([binary, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_base_image_is_a_build_argument(compose: dict[str, Any]) -> None:
    """``BASE=... docker-compose build`` reaches the Dockerfile's ``ARG BASE`` (both targets), with
    the Makefile's default, so a host without access to Docker Hub builds from a local base."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    default = next(line.split("=", 1)[1] for line in dockerfile.splitlines() if line.startswith("ARG BASE="))
    assert "FROM ${BASE} AS etcd" in dockerfile and "FROM ${BASE} AS agent" in dockerfile
    for name, svc in compose["services"].items():
        assert svc["build"]["args"]["BASE"] == "${BASE:-" + default + "}", name
    if shutil.which("docker-compose") is None:
        return
    out = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config"], capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin", "BASE": "local/base:1"})
    assert out.returncode == 0, out.stderr
    built = yaml.safe_load(out.stdout)["services"]
    assert {svc["build"]["args"]["BASE"] for svc in built.values()} == {"local/base:1"}
