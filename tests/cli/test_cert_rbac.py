"""SECURITY.md, "TLS private keys": with etcd auth, a role on ``<prefix>/`` alone (an operator's)
can manage services but cannot read or write certificates and keys; a role that adds
``<prefix>-tls/certs/`` (and read of ``acme/orders/``) can.  A real etcd with auth enabled, the CLI
as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import EtcdCluster
from tests.support.tlsgen import issue, make_ca

pytestmark = pytest.mark.etcd
PREFIX = "/ddrbac"


@pytest.fixture(scope="module")
def auth_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("rbac"), size=1)
    cluster.start()
    # the roles of SECURITY.md's example, for PREFIX
    for cmd in (["user", "add", "root:rootpw"],
                ["role", "add", "operator"],
                ["role", "grant-permission", "--prefix=true", "operator", "readwrite", PREFIX + "/"],
                ["role", "add", "certs"],
                ["role", "grant-permission", "--prefix=true", "certs", "readwrite", PREFIX + "-tls/certs/"],
                ["role", "grant-permission", "--prefix=true", "certs", "read", PREFIX + "-tls/acme/orders/"],
                ["user", "add", "op:oppw"], ["user", "grant-role", "op", "operator"],
                ["user", "add", "cm:cmpw"], ["user", "grant-role", "cm", "operator"],
                ["user", "grant-role", "cm", "certs"],
                ["auth", "enable"]):
        subprocess.run(cluster.etcdctl(*cmd), check=True, capture_output=True, env={**os.environ, "ETCDCTL_API": "3"})
    try:
        yield cluster
    finally:
        cluster.stop()


def cli(etcd: EtcdCluster, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DAPRDOCKR_ETCD_PASSWORD": f"{user}pw"}
    return subprocess.run([sys.executable, "-m", "daprdockr", "--etcd", etcd.endpoints, "--prefix", PREFIX,
                           "--etcd-user", user, *args], capture_output=True, text=True, timeout=60, env=env)


def test_an_operator_role_without_the_tls_prefix_sees_no_key(auth_etcd: EtcdCluster, tmp_path: Path) -> None:
    pair = issue(["a.example.com"], ca=make_ca())
    (tmp_path / "a.crt").write_text(pair.cert_pem)
    (tmp_path / "a.key").write_text(pair.key_pem)
    files = ["--cert", str(tmp_path / "a.crt"), "--key", str(tmp_path / "a.key")]

    r = cli(auth_etcd, "cm", "cert", "set", "a.example.com", *files)
    assert r.returncode == 0, r.stderr
    r = cli(auth_etcd, "cm", "cert", "get", "a.example.com", "--json", "--show-key")
    assert r.returncode == 0 and json.loads(r.stdout)["key"] == pair.key_pem, r.stderr
    assert [row["host"] for row in json.loads(cli(auth_etcd, "cm", "cert", "ls", "--json").stdout)] == ["a.example.com"]

    assert cli(auth_etcd, "op", "svc", "ls").returncode == 0  # the operator's own prefix
    for args in (["cert", "ls"], ["cert", "get", "a.example.com", "--show-key"], ["cert", "del", "a.example.com"],
                 ["cert", "set", "a.example.com", *files]):
        r = cli(auth_etcd, "op", *args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1 and "permission denied" in lines[0], (args, r.stderr)
        assert "PRIVATE KEY" not in r.stdout + r.stderr
    assert cli(auth_etcd, "cm", "cert", "get", "a.example.com").returncode == 0  # still there
