"""etcd over TLS with client-certificate auth, and etcd with user auth and a role limited to the
prefix: real etcd servers, the store, the CLI and ``daprdockrcmd`` as real processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.endpoints import EtcdSecurity, parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.errors import StoreError, StoreUnavailableError
from tests.support.certs import Pair, issue, make_ca
from tests.support.procs import EtcdCluster

pytestmark = pytest.mark.etcd
BIN = Path(sys.executable).parent
WEB = ServiceName(group="myapp", service="web")
IMG = "daprdockr-test/busybox:latest"
PREFIX = "/ddsec"


class Pki:
    def __init__(self, dir: Path) -> None:
        self.ca = make_ca(dir, "ca")
        self.server = issue(dir, self.ca, "server", server=True)
        self.client = issue(dir, self.ca, "client", server=False)
        rogue_ca = make_ca(dir, "rogue-ca")
        self.rogue = issue(dir, rogue_ca, "rogue", server=False)


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EtcdCluster, Pki]]:
    dir = tmp_path_factory.mktemp("tls")
    pki = Pki(dir)
    cluster = EtcdCluster(dir / "etcd", size=1, tls=(pki.server.cert, pki.server.key, pki.ca.cert))
    (dir / "etcd").mkdir()
    cluster.start()
    try:
        yield cluster, pki
    finally:
        cluster.stop()


def cli(*args: str, env: dict[str, str] | None = None, tool: str = "daprdockr") -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def spec(n: int = 2) -> ServiceSpec:
    return ServiceSpec.from_dict({"image": IMG, "instances": n}, name=WEB)


async def test_store_over_tls_with_a_client_certificate(tls_etcd: tuple[EtcdCluster, Pki]) -> None:
    cluster, pki = tls_etcd
    security = EtcdSecurity(cacert=pki.ca.cert, cert=pki.client.cert, key=pki.client.key)
    async with EtcdStore(endpoints=parse_endpoints(cluster.endpoints), schema=KeySchema(PREFIX + "a"),
                         security=security) as store:
        seen: list[str] = []

        _, revision = await store.read_prefix(store.schema.root)

        async def watch() -> None:  # (from the revision read: no write is missed however slow the start)
            async for ev in store.watch(start_revision=revision + 1):
                seen.append(ev.key)
                return

        task = asyncio.create_task(watch())
        await VersionStore(store).put_service(spec())
        assert await VersionStore(store).get_service(WEB) == spec()
        lease = await store.grant_lease(5)
        assert await store.keepalive(lease) > 0
        await asyncio.wait_for(task, 5)
        assert seen == [f"{PREFIX}a/services/myapp/web"]


@pytest.mark.parametrize("who", ["rogue", "none"])
async def test_a_wrong_or_missing_client_certificate_is_one_clear_error(
    tls_etcd: tuple[EtcdCluster, Pki], who: str
) -> None:
    cluster, pki = tls_etcd
    pair: Pair | None = pki.rogue if who == "rogue" else None
    security = EtcdSecurity(cacert=pki.ca.cert, cert=pair.cert if pair else None, key=pair.key if pair else None)
    store = EtcdStore(endpoints=parse_endpoints(cluster.endpoints), schema=KeySchema(PREFIX), timeout=2,
                      security=security)
    with pytest.raises(StoreUnavailableError) as err:
        await store.connect()
    await store.close()
    assert cluster.endpoints in str(err.value)
    flags = ["--etcd-cacert", str(pki.ca.cert)] + (["--etcd-cert", str(pair.cert), "--etcd-key", str(pair.key)]
                                                    if pair else [])
    r = cli("--etcd", cluster.endpoints, *flags, "--timeout", "2", "svc", "ls")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 4 and len(lines) == 1 and cluster.endpoints in lines[0], r.stderr


def test_cli_and_daprdockrcmd_over_tls(tls_etcd: tuple[EtcdCluster, Pki]) -> None:
    cluster, pki = tls_etcd
    env = {"DAPRDOCKR_ETCD": cluster.endpoints, "DAPRDOCKR_PREFIX": PREFIX + "b",
           "DAPRDOCKR_ETCD_CACERT": str(pki.ca.cert), "DAPRDOCKR_ETCD_CERT": str(pki.client.cert),
           "DAPRDOCKR_ETCD_KEY": str(pki.client.key)}
    r = cli("svc", "set", "web.myapp", "--image", IMG, "--instances", "2", env=env)
    assert r.returncode == 0, r.stderr
    r = cli("-svc", "web.myapp", "-set", "-instances", "3", f"-etcd={cluster.endpoints}", f"-prefix={PREFIX}b",
            env=env, tool="daprdockrcmd")
    assert r.returncode == 0, r.stderr
    r = cli("svc", "get", "web.myapp", env=env)
    assert r.returncode == 0 and '"instances": 3' in r.stdout, r.stderr


def test_credentials_in_an_endpoint_url_are_refused_not_dropped() -> None:
    r = cli("--etcd", "http://dd:secret@127.0.0.1:2379", "svc", "ls")
    assert r.returncode == 2 and "credentials in the URL" in r.stderr and "secret" not in r.stderr


# --------------------------------------------------------------------------- user auth
@pytest.fixture(scope="module")
def auth_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    dir = tmp_path_factory.mktemp("auth")
    # tokens live 2 s: the store must re-authenticate on its own
    cluster = EtcdCluster(dir, size=1, extra_args=("--auth-token-ttl", "2"))
    cluster.start()
    for cmd in (["user", "add", "root:rootpw"], ["role", "add", "dd"],
                ["role", "grant-permission", "dd", "--prefix=true", "readwrite", PREFIX + "/"],
                ["user", "add", "dd:ddpw"], ["user", "grant-role", "dd", "dd"], ["auth", "enable"]):
        subprocess.run(cluster.etcdctl(*cmd), check=True, capture_output=True, env={**os.environ, "ETCDCTL_API": "3"})
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_store_with_a_user_limited_to_the_prefix(auth_etcd: EtcdCluster) -> None:
    security = EtcdSecurity(user="dd", password="ddpw")
    async with EtcdStore(endpoints=parse_endpoints(auth_etcd.endpoints), schema=KeySchema(PREFIX),
                         security=security, probe_interval=1.0) as store:
        events: list[str] = []

        async def watch() -> None:
            async for ev in store.watch():
                events.append(ev.kind)
                if ev.kind == "put":
                    return

        task = asyncio.create_task(watch())
        lease = await store.grant_lease(5)
        await asyncio.sleep(3.5)  # past the token's 2 s TTL: calls and the watch's probes re-authenticate
        await VersionStore(store).put_service(spec())
        assert await VersionStore(store).get_service(WEB) == spec()
        assert await store.keepalive(lease) > 0
        await asyncio.wait_for(task, 5)
        assert events == ["put"], "the watch was interrupted by the token's expiry"
    outside = EtcdStore(endpoints=parse_endpoints(auth_etcd.endpoints), schema=KeySchema("/elsewhere"),
                        security=security)
    with pytest.raises(StoreError, match="permission denied"):
        await VersionStore(outside).put_service(spec())
    await outside.close()


def test_cli_with_a_password_file_and_a_wrong_password(auth_etcd: EtcdCluster, tmp_path: Path) -> None:
    good, bad = tmp_path / "pw", tmp_path / "bad"
    good.write_text("ddpw\n")
    bad.write_text("nope\n")
    base = ["--etcd", auth_etcd.endpoints, "--prefix", PREFIX, "--etcd-user", "dd"]
    r = cli(*base, "--etcd-password-file", str(good), "svc", "set", "web.myapp", "--image", IMG)
    assert r.returncode == 0, r.stderr
    r = cli(*base, "svc", "ls", env={"DAPRDOCKR_ETCD_PASSWORD": "ddpw"})
    assert r.returncode == 0 and "web.myapp" in r.stdout, r.stderr
    r = cli(*base, "--etcd-password-file", str(bad), "svc", "ls")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert auth_etcd.endpoints in lines[0] and "authentication as 'dd' failed" in lines[0] and "nope" not in r.stderr
    r = cli(*base, "svc", "ls")
    assert r.returncode == 2 and "needs a password" in r.stderr


@pytest.mark.docker
async def test_agent_with_a_user_limited_to_the_prefix(auth_etcd: EtcdCluster, docker_image: str,
                                                        tmp_path: Path) -> None:
    from tests.agent.cluster import local_cluster, wait_for

    security = EtcdSecurity(user="dd", password="ddpw")
    async with EtcdStore(endpoints=parse_endpoints(auth_etcd.endpoints), schema=KeySchema(PREFIX),
                         security=security) as store, \
            local_cluster(etcd=auth_etcd.endpoints, prefix=PREFIX, tmp=tmp_path, nodes=1, node_prefix="au",
                          etcd_security=security):
        await VersionStore(store).put_service(ServiceSpec.from_dict({"image": docker_image, "instances": 2}, name=WEB))
        state = await wait_for(store, lambda s: sum(r.state == "running" for r in s.instances_of(WEB)) == 2)
        assert set(state.nodes) == {"au1"}
        await asyncio.sleep(3)  # tokens expire (2 s): the agent keeps its lease and its instances
        state = await wait_for(store, lambda s: sum(r.state == "running" for r in s.instances_of(WEB)) == 2)
        assert set(state.nodes) == {"au1"}
        await VersionStore(store).delete_service(WEB)
        await wait_for(store, lambda s: not s.instances_of(WEB))


def _agent(*args: str, env: dict[str, str], tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # (the etcd options are the command's, before ``agent``)
        [sys.executable, "-m", "daprdockr", *args, "agent", "--node-id", "bad1", "--advertise-ip", "127.0.0.11",
         "--state-dir", str(tmp), "--dns-listen", "off", "--http-listen", "off", "--api-listen", "off"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env})


@pytest.mark.docker
def test_an_agent_with_a_wrong_password_or_certificate_exits_with_one_line(
    auth_etcd: EtcdCluster, tls_etcd: tuple[EtcdCluster, Pki], docker_image: str, tmp_path: Path
) -> None:
    """Regression: the agent retried a refused password or certificate forever, logging the same
    error every few seconds; it now exits (code 1) with one error line naming the endpoint."""
    tls, pki = tls_etcd
    cases = {
        "password": (["--etcd", auth_etcd.endpoints, "--etcd-user", "dd"], {"DAPRDOCKR_ETCD_PASSWORD": "nope"},
                     auth_etcd.endpoints),
        "certificate": (["--etcd", tls.endpoints, "--etcd-cacert", str(pki.ca.cert), "--etcd-cert",
                         str(pki.rogue.cert), "--etcd-key", str(pki.rogue.key)], {}, tls.endpoints),
    }
    for name, (args, env, endpoint) in cases.items():
        r = _agent(*args, env=env, tmp=tmp_path / name)
        errors = [line for line in r.stderr.splitlines() if " ERROR " in line]
        assert r.returncode == 1, (name, r.stderr[-2000:])
        assert len(errors) == 1 and endpoint.removeprefix("http://").removeprefix("https://") in errors[0], \
            (name, errors)
        assert "nope" not in r.stderr
