"""Pulls from a private registry with the host's Docker credentials, against the real thing.

A real ``docker-registry`` behind an htpasswd login (:mod:`tests.support.registry`) holds the
busybox test image, pushed with a real ``docker login`` of a throwaway ``DOCKER_CONFIG``; the
engine's copy of that reference is removed before each test, so every start pulls.  Shown: the
real DockerRuntime start path pulls and runs it when the host configuration holds the login
(``auths`` written by ``docker login``; a credential helper script on PATH, per registry and as
``credsStore``), and fails with a terminal error naming the registry and whether credentials were
found when it does not; a real agent process does the same, takes a ``docker login`` made while
it runs without a restart, makes no retry storm meanwhile, and never shows the password: not in
its log (at debug level), in etcd (the whole prefix) or in its API's answers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import secrets
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from daprdockr.adapters.docker_runtime import DockerRuntime
from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.registry_credentials import DockerCredentials
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.errors import ContainerError
from tests.agent.cluster import remove_node_containers, spawn_agent, wait_for
from tests.support.procs import free_port, terminate
from tests.support.registry import Registry, registry

pytestmark = pytest.mark.docker
USER = "alice"
PASSWORD = f"pw-{secrets.token_hex(12)}"
SECRETS = (PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
NAME = ServiceName(group="priv", service="web")


@dataclass(frozen=True)
class Private:
    registry: Registry
    image: str


def docker_login(config_dir: Path, addr: str, *, password: str = PASSWORD) -> Path:
    """A real ``docker login`` into ``config_dir`` (a throwaway DOCKER_CONFIG); its config.json."""
    subprocess.run(["docker", "login", "-u", USER, "--password-stdin", addr], input=password, text=True,
                   env={**os.environ, "DOCKER_CONFIG": str(config_dir)}, check=True, capture_output=True)
    return config_dir / "config.json"


def forget(image: str) -> None:
    subprocess.run(["docker", "rmi", image], capture_output=True)  # (only the tag: the layers are shared)


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, docker_image: str) -> Iterator[Private]:
    tmp = tmp_path_factory.mktemp("private-registry")
    with registry(tmp, login=(USER, PASSWORD)) as served:
        image = f"{served.addr}/priv/busybox:{uuid.uuid4().hex[:8]}"
        pusher = docker_login(tmp / "pusher", served.addr).parent
        subprocess.run(["docker", "tag", docker_image, image], check=True)
        subprocess.run(["docker", "push", image], env={**os.environ, "DOCKER_CONFIG": str(pusher)},
                       check=True, capture_output=True)
        forget(image)
        try:
            yield Private(registry=served, image=image)
        finally:
            forget(image)


@pytest.fixture
def absent(private: Private) -> Iterator[Private]:
    """The image is not in the engine: a start must pull it."""
    forget(private.image)
    assert subprocess.run(["docker", "image", "inspect", private.image], capture_output=True).returncode != 0
    yield private
    forget(private.image)


def web(image: str) -> ServiceSpec:
    return ServiceSpec(name=NAME, image=image, http_port=8080, cmd=("httpd", "-f", "-p", "8080", "-h", "/www"))


async def start_with(credentials: DockerCredentials | None, image: str) -> None:
    """The real start path (pull, create, start) of one instance; it runs, then is removed."""
    runtime = DockerRuntime(node_id=f"reg{uuid.uuid4().hex[:6]}", advertise_ip="127.0.0.1", credentials=credentials)
    try:
        info = await runtime.start_instance(spec=web(image), number=1)
        assert info.running and dict(info.ports)["8080/tcp"] > 0
        await runtime.remove(info.id, grace=0)
    finally:
        await runtime.close()


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a credential appears in {where}"


async def test_a_docker_login_on_the_host_pulls_and_runs(absent: Private, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    config = docker_login(tmp_path / "host", absent.registry.addr)
    assert USER in base64.b64decode(json.loads(config.read_text())["auths"][absent.registry.addr]["auth"]).decode()
    with caplog.at_level(logging.DEBUG):
        await start_with(DockerCredentials(path=config), absent.image)
    assert f"with the credentials for {absent.registry.addr} from auths of {config}" in caplog.text
    assert_no_secret("the log", caplog.text)


@pytest.mark.parametrize("field", ["credHelpers", "credsStore"])
async def test_a_credential_helper_pulls_and_runs(absent: Private, tmp_path: Path, field: str,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-stub"
    answer = json.dumps({"ServerURL": absent.registry.addr, "Username": USER, "Secret": PASSWORD})
    helper.write_text(f"#!/bin/sh\ncat > {bin_dir}/asked\nprintf '%s' '{answer}'\n")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credHelpers": {absent.registry.addr: "stub"}} if field == "credHelpers"
                                 else {"credsStore": "stub", "auths": {absent.registry.addr: {}}}))
    with caplog.at_level(logging.DEBUG):
        await start_with(DockerCredentials(path=config), absent.image)
    assert (bin_dir / "asked").read_text() == absent.registry.addr
    assert "from credential helper docker-credential-stub" in caplog.text
    assert_no_secret("the log", caplog.text)


@pytest.mark.parametrize("login", ["none", "no-file", "wrong-password", "other-registry"])
async def test_without_the_login_the_pull_fails_clearly_and_for_good(absent: Private, tmp_path: Path,
                                                                     login: str) -> None:
    addr = absent.registry.addr
    config = tmp_path / "config.json"
    if login == "wrong-password":
        config.write_text(json.dumps({"auths": {addr: {"username": USER, "password": PASSWORD[::-1]}}}))
    elif login == "other-registry":
        config.write_text(json.dumps({"auths": {"127.0.0.1:1": {"username": USER, "password": PASSWORD}}}))
    credentials = None if login == "none" else DockerCredentials(path=config)
    with pytest.raises(ContainerError) as err:
        await start_with(credentials, absent.image)
    message = str(err.value)
    assert not err.value.transient  # held for the full backoff at once: no retry storm
    assert f"image {absent.image} is not available: registry {addr} refused the pull" in message
    expected = {
        "none": f"no credentials were found for {addr} (--docker-config none)",
        "no-file": f"no credentials were found for {addr} ({config} does not exist)",
        "wrong-password": f"the credentials for {addr} from auths of {config} were refused",
        "other-registry": f"no credentials were found for {addr} (no entry in {config})",
    }[login]
    assert expected in message
    assert_no_secret("the error", message)
    assert PASSWORD[::-1] not in message


async def test_a_missing_helper_is_a_clear_error(absent: Private, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credHelpers": {absent.registry.addr: "nowhere"}}))
    before = absent.registry.requests()
    with pytest.raises(ContainerError, match=f"credential helper docker-credential-nowhere for registry "
                                             f"{absent.registry.addr} is not installed") as err:
        await start_with(DockerCredentials(path=config), absent.image)
    assert not err.value.transient
    assert absent.registry.requests() == before  # nothing was asked of the registry without credentials


def api_get(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return str(resp.read().decode())
    except urllib.error.HTTPError as exc:  # /healthz answers 503 while something is failing
        return str(exc.read().decode())


@pytest.mark.etcd
@pytest.mark.slow
async def test_agent_pulls_once_the_host_logs_in_and_never_shows_the_password(
        absent: Private, store: EtcdStore, etcd_endpoints: str, prefix: str, tmp_path: Path) -> None:
    addr = absent.registry.addr
    host_docker = tmp_path / "host-docker"  # the host's DOCKER_CONFIG: no login yet
    node = f"reg{uuid.uuid4().hex[:6]}"
    api = free_port()
    proc = spawn_agent(etcd=etcd_endpoints, prefix=prefix, node=node, ip="127.0.0.1", state_dir=tmp_path,
                       global_options=("-vv",),
                       extra=("--api-listen", f"127.0.0.1:{api}", "--docker-config", str(host_docker / "config.json")))
    try:
        await VersionStore(store).put_service(replace(web(absent.image), instances=1))
        state = await wait_for(store, lambda s: any(r.state == "failed" for r in s.instances_of(NAME)), timeout=30)
        error = state.instances[(NAME, 1)].error
        assert f"registry {addr} refused the pull" in error
        assert f"no credentials were found for {addr} ({host_docker / 'config.json'} does not exist)" in error
        # terminal: the instance waits the full backoff (30 s) before it asks the registry again
        asked = absent.registry.requests()
        await asyncio.sleep(5)
        assert absent.registry.requests() == asked, "the refused pull was retried at once"
        docker_login(host_docker, addr)  # on the host, while the agent runs
        state = await wait_for(store, lambda s: [r.state for r in s.instances_of(NAME)] == ["running"], timeout=60)
        assert state.instances[(NAME, 1)].node == node
        answers = {path: api_get(api, path) for path in ("/v1/status", "/healthz", "/metrics")}
        assert NAME.service in answers["/v1/status"]
        kvs, _ = await store.read_prefix(prefix)
        etcd_text = "\n".join(f"{kv.key} {kv.value.decode(errors='replace')}" for kv in kvs)
    finally:
        terminate(proc, grace=25)
        remove_node_containers([node])
    log = (tmp_path / f"{node}.log").read_text(errors="replace")
    assert f"pulling image {absent.image} with the credentials for {addr} from auths of" in log
    assert "refused the pull" in log and "DEBUG" in log  # the log captured both pulls, at debug level
    assert_no_secret("the agent's log", log)
    assert absent.image in etcd_text
    assert_no_secret("etcd", etcd_text)
    for path, answer in answers.items():
        assert_no_secret(f"the API's {path}", answer)
