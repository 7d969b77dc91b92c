"""``daprdockr cert set / ls / get / del`` against a real etcd: round trips, each bad input refused
with one clear line and exit 2 with nothing stored (etcd read back), a malformed value written
straight into etcd listed as invalid without breaking the listing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.core.acme_records import AcmeOrder
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.jsondata import dumps
from daprdockr.core.keys import KeySchema
from daprdockr.core.state import RawKV
from tests.support.tlsgen import DAY, issue, key_pem, make_ca

pytestmark = pytest.mark.etcd
CA = make_ca()
INTER = issue([], cn="Intermediate", ca=CA, is_ca=True)


def _tls_keys(etcd: str, prefix: str) -> list[RawKV]:
    async def read() -> list[RawKV]:
        async with EtcdStore(endpoints=parse_endpoints(etcd), schema=KeySchema(prefix)) as store:
            return (await store.read_prefix(f"{prefix}-tls/"))[0] + (await store.read_prefix(f"{prefix}/"))[0]
    return asyncio.run(read())


def _put_raw(etcd: str, prefix: str, key: str, value: bytes) -> None:
    async def put() -> None:
        async with EtcdStore(endpoints=parse_endpoints(etcd), schema=KeySchema(prefix)) as store:
            await store.put_raw(key, value)
    asyncio.run(put())


def _files(tmp: Path, name: str, cert: str, key: str) -> tuple[str, str]:
    (tmp / f"{name}.crt").write_text(cert)
    (tmp / f"{name}.key").write_text(key)
    return str(tmp / f"{name}.crt"), str(tmp / f"{name}.key")


def test_set_ls_get_del_round_trip(cli, tmp_path: Path, etcd_endpoints: str, prefix: str) -> None:  # type: ignore[no-untyped-def]
    www = issue(["www.example.com", "example.com"], ca=INTER)
    wild = issue(["*.example.com"], ca=CA)
    c1, k1 = _files(tmp_path, "www", www.chain_pem(INTER), www.key_pem)
    c2, k2 = _files(tmp_path, "wild", wild.cert_pem, wild.key_pem)
    r = cli("cert", "set", "WWW.example.com", "--cert", c1, "--key", k1)
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith("www.example.com: certificate set (www.example.com, example.com; not after 20")
    r = cli("cert", "set", "*.example.com", "--cert", c2, "--key", k2, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["fingerprint"] == wild.cert.fingerprint(hashes.SHA256()).hex()

    rows = json.loads(cli("cert", "ls", "--json").stdout)
    assert [row["host"] for row in rows] == ["*.example.com", "www.example.com"]
    assert rows[1]["source"] == "manual" and rows[1]["issuer"] == "CN=Intermediate"
    assert rows[1]["serial"] == format(www.cert.serial_number, "x") and rows[1]["status"].startswith("ok, 29 days")
    table = cli("cert", "ls")
    assert table.exit_code == 0
    assert table.stdout.split("\n")[0].split() == ["HOST", "SOURCE", "ISSUER", "NOT", "AFTER", "FINGERPRINT", "STATUS"]
    assert "www.example.com  manual  CN=Intermediate" in table.stdout

    got = cli("cert", "get", "www.example.com")
    assert got.exit_code == 0 and "issuer: CN=Intermediate" in got.stdout
    assert www.chain_pem(INTER) in got.stdout and "PRIVATE KEY" not in got.stdout
    with_key = json.loads(cli("cert", "get", "www.example.com", "--json", "--show-key").stdout)
    assert with_key["cert"] == www.chain_pem(INTER) and with_key["key"] == www.key_pem
    assert "key" not in json.loads(cli("cert", "get", "www.example.com", "--json").stdout)

    assert cli("cert", "del", "www.example.com").exit_code == 0
    gone = cli("cert", "get", "www.example.com")
    assert gone.exit_code == 3 and gone.stderr.strip() == "daprdockr: no certificate for www.example.com"
    assert cli("cert", "del", "www.example.com").exit_code == 3
    assert [kv.key for kv in _tls_keys(etcd_endpoints, prefix)] == [f"{prefix}-tls/certs/*.example.com"]


def _bad_inputs(tmp: Path) -> list[tuple[str, list[str], str]]:
    now = time.time()
    good = issue(["a.example.com"], ca=CA)
    other = issue(["a.example.com"], ca=CA)
    expired = issue(["a.example.com"], ca=CA, not_before=now - 10 * DAY, not_after=now - DAY)
    future = issue(["a.example.com"], ca=CA, not_before=now + DAY, not_after=now + 10 * DAY)
    leaf = issue(["a.example.com"], ca=INTER)
    (tmp / "huge.crt").write_text(good.cert_pem + "A" * (1 << 20))
    (tmp / "binary.crt").write_bytes(good.cert.public_bytes(Encoding.DER))
    (tmp / "garbage.crt").write_text("this is not a certificate\n")
    (tmp / "enc.key").write_text(key_pem(good.key, password=b"pw"))
    f = {name: _files(tmp, name, i.cert_pem, i.key_pem) for name, i in
         [("good", good), ("other", other), ("expired", expired), ("future", future)]}
    (tmp / "disorder.crt").write_text(leaf.cert_pem + CA.cert_pem + INTER.cert_pem)
    (tmp / "leaf.key").write_text(leaf.key_pem)
    g = f["good"]
    return [
        ("key does not match", ["a.example.com", "--cert", g[0], "--key", f["other"][1]],
         "daprdockr: key: the private key does not match the certificate (the first one of the chain)"),
        ("expired", ["a.example.com", "--cert", f["expired"][0], "--key", f["expired"][1]],
         "daprdockr: cert: certificate expired on "),
        ("not yet valid", ["a.example.com", "--cert", f["future"][0], "--key", f["future"][1]],
         "daprdockr: cert: certificate is not valid yet: from "),
        ("garbage PEM", ["a.example.com", "--cert", str(tmp / "garbage.crt"), "--key", g[1]],
         "daprdockr: cert: not a PEM certificate (no '-----BEGIN CERTIFICATE-----' line)"),
        ("DER, not PEM", ["a.example.com", "--cert", str(tmp / "binary.crt"), "--key", g[1]],
         f"daprdockr: --cert: {tmp / 'binary.crt'} is not PEM text (binary data; DER? convert it with openssl)"),
        ("1 MiB certificate", ["a.example.com", "--cert", str(tmp / "huge.crt"), "--key", g[1]],
         f"daprdockr: --cert: {tmp / 'huge.crt'} is over 49152 bytes: not a certificate chain or key of a TLS server"),
        ("name does not cover host", ["b.example.com", "--cert", g[0], "--key", g[1]],
         "daprdockr: cert: certificate names a.example.com; none covers b.example.com"),
        ("wildcard host, plain name", ["*.example.com", "--cert", g[0], "--key", g[1]],
         "daprdockr: cert: certificate names a.example.com; none covers *.example.com"),
        ("chain out of order", ["a.example.com", "--cert", str(tmp / "disorder.crt"), "--key", str(tmp / "leaf.key")],
         "daprdockr: cert: chain out of order: "),
        ("encrypted key", ["a.example.com", "--cert", g[0], "--key", str(tmp / "enc.key")],
         "daprdockr: key: private key is encrypted: give it without a passphrase"),
        ("missing file", ["a.example.com", "--cert", str(tmp / "nope.crt"), "--key", g[1]],
         f"daprdockr: --cert: cannot read {tmp / 'nope.crt'}: No such file or directory"),
        ("bad host", ["a b.example.com", "--cert", g[0], "--key", g[1]], "daprdockr: host: 'a b.example.com' is not"),
        ("bad wildcard", ["*.com", "--cert", g[0], "--key", g[1]],
         "daprdockr: host: '*.com': a wildcard needs at least two labels after '*.'"),
    ]


CASES = ["key does not match", "expired", "not yet valid", "garbage PEM", "DER, not PEM", "1 MiB certificate",
         "name does not cover host", "wildcard host, plain name", "chain out of order", "encrypted key",
         "missing file", "bad host", "bad wildcard"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_refused_nothing_stored(cli, tmp_path: Path, etcd_endpoints: str, prefix: str,  # type: ignore[no-untyped-def]
                                          case: str) -> None:
    cases = {name: (args, message) for name, args, message in _bad_inputs(tmp_path)}
    assert sorted(cases) == sorted(CASES)
    args, message = cases[case]
    r = cli("cert", "set", *args)
    assert r.exit_code == 2, r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert r.stdout == ""
    assert _tls_keys(etcd_endpoints, prefix) == []  # nothing written, anywhere under either prefix


def test_bad_input_leaves_the_stored_certificate(cli, tmp_path: Path, etcd_endpoints: str, prefix: str) -> None:  # type: ignore[no-untyped-def]
    good = issue(["a.example.com"], ca=CA)
    other = issue(["a.example.com"], ca=CA)
    c, k = _files(tmp_path, "good", good.cert_pem, good.key_pem)
    assert cli("cert", "set", "a.example.com", "--cert", c, "--key", k).exit_code == 0
    before = _tls_keys(etcd_endpoints, prefix)
    assert cli("cert", "set", "a.example.com", "--cert", c, "--key", _files(tmp_path, "o", "", other.key_pem)[1]
               ).exit_code == 2
    assert _tls_keys(etcd_endpoints, prefix) == before


def test_malformed_value_in_etcd_listed_as_invalid(cli, tmp_path: Path, etcd_endpoints: str, prefix: str) -> None:  # type: ignore[no-untyped-def]
    good = issue(["a.example.com"], ca=CA)
    c, k = _files(tmp_path, "good", good.cert_pem, good.key_pem)
    assert cli("cert", "set", "a.example.com", "--cert", c, "--key", k).exit_code == 0
    _put_raw(etcd_endpoints, prefix, f"{prefix}-tls/certs/b.example.com", b"{broken")
    _put_raw(etcd_endpoints, prefix, f"{prefix}-tls/certs/c.example.com",
             json.dumps({"host": "c.example.com", "cert": good.cert_pem, "key": good.key_pem, "source": "manual",
                         "set_at": 1}).encode())  # a pair whose name does not cover its host
    order = AcmeOrder(node="n2", state="failed", failures=3, last_error="connection refused", next_try=time.time())
    _put_raw(etcd_endpoints, prefix, f"{prefix}-tls/acme/orders/d.example.com", dumps(order.to_dict()))
    r = cli("cert", "ls", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["host"]: row for row in json.loads(r.stdout)}
    assert sorted(rows) == ["a.example.com", "b.example.com", "c.example.com", "d.example.com"]
    assert rows["a.example.com"]["status"].startswith("ok")
    assert rows["b.example.com"]["status"] == "invalid" and "value is not JSON" in rows["b.example.com"]["invalid"]
    assert "none covers c.example.com" in rows["c.example.com"]["invalid"]
    assert rows["d.example.com"]["status"].startswith("failed (3 failures): connection refused; next try 20")
    table = cli("cert", "ls")
    assert table.exit_code == 0
    assert "invalid: " in table.stdout and "a.example.com" in table.stdout
    assert cli("cert", "get", "b.example.com").exit_code == 1  # malformed: said so, not a traceback
    assert cli("cert", "del", "b.example.com").exit_code == 0


def test_cert_ls_as_a_real_process(tmp_path: Path, etcd_endpoints: str, prefix: str) -> None:
    good = issue(["a.example.com"], ca=CA)
    c, k = _files(tmp_path, "good", good.cert_pem, good.key_pem)
    env = {**os.environ, "DAPRDOCKR_ETCD": etcd_endpoints, "DAPRDOCKR_PREFIX": prefix}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "daprdockr", "cert", *args], capture_output=True, text=True,
                              env=env, timeout=60)

    assert run("set", "a.example.com", "--cert", c, "--key", k).returncode == 0
    out = run("ls", "--json")
    assert out.returncode == 0 and [row["host"] for row in json.loads(out.stdout)] == ["a.example.com"]


def test_help_has_examples() -> None:
    from typer.testing import CliRunner

    from daprdockr.cli.main import app

    for command in ("set", "ls", "get", "del"):
        r = CliRunner().invoke(app, ["cert", command, "--help"])
        assert r.exit_code == 0 and "Example: daprdockr cert " + command in r.output, r.output
