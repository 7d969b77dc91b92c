"""DockerCredentials: the host's Docker configuration read again when it changes, and real
credential helper processes (stub scripts on PATH) asked as Docker's client asks them."""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import pytest

from daprdockr.adapters.registry_credentials import DockerCredentials, default_docker_config
from daprdockr.core.registry_auth import RegistryCredentials
from daprdockr.errors import ContainerError

IMAGE = "127.0.0.1:5999/priv/app:1"
SECRET = "SECRET-pw-4711"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_config(path: Path, config: dict[str, object]) -> None:
    path.write_text(json.dumps(config))


def stub_helper(bin_dir: Path, name: str, *, answer: str = "", exit_code: int = 0, sleep: float = 0) -> Path:
    """``docker-credential-<name>``: records its arguments and stdin, prints ``answer``."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > "{bin_dir}/{name}.args"\n'
        f'cat > "{bin_dir}/{name}.stdin"\n'
        + (f"sleep {sleep}\n" if sleep else "")
        + f"printf '%s' '{answer}'\n"
        f"exit {exit_code}\n"
    )
    script.chmod(0o755)
    return script


@pytest.fixture
def helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def test_default_path() -> None:
    assert default_docker_config({"DOCKER_CONFIG": "/etc/dc"}) == Path("/etc/dc/config.json")
    assert default_docker_config({}) == Path.home() / ".docker" / "config.json"


async def test_absent_file_is_no_credentials_and_a_login_counts_at_once(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    source = DockerCredentials(path=path)
    found = await source.lookup(IMAGE)
    assert found.credentials is None and found.host == "127.0.0.1:5999"
    assert found.describe() == f"no credentials were found for 127.0.0.1:5999 ({path} does not exist)"
    write_config(path, {"auths": {"127.0.0.1:5999": {"auth": b64("alice:" + SECRET)}}})  # docker login
    found = await source.lookup(IMAGE)
    assert found.credentials == RegistryCredentials(server="127.0.0.1:5999", username="alice", password=SECRET)
    assert found.source == f"auths of {path}"
    write_config(path, {"auths": {"127.0.0.1:5999": {"auth": b64("alice:" + SECRET[::-1])}}})  # same size
    assert (await source.lookup(IMAGE)).credentials == RegistryCredentials(
        server="127.0.0.1:5999", username="alice", password=SECRET[::-1])
    assert (await source.lookup("127.0.0.1:6000/x")).credentials is None
    path.unlink()  # docker logout of the last registry may remove nothing, but a removed file is no login
    assert (await source.lookup(IMAGE)).credentials is None


async def test_unusable_file_is_logged_once_and_means_no_credentials(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"auths": {"127.0.0.1:5999": {"auth": "not-base64-' + SECRET + '"}}}')
    source = DockerCredentials(path=path)
    with caplog.at_level(logging.INFO):
        first = await source.lookup(IMAGE)
        await source.lookup(IMAGE)
    assert first.credentials is None
    assert "is unusable: auths['127.0.0.1:5999']: auth is not base64" in first.source
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert SECRET not in caplog.text and SECRET not in first.describe()


async def test_cred_helper_is_asked_with_the_server_url(tmp_path: Path, helpers: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    stub_helper(helpers, "stub", answer=json.dumps({"ServerURL": "x", "Username": "bob", "Secret": SECRET}))
    stub_helper(helpers, "hub", answer=json.dumps({"Username": "<token>", "Secret": SECRET}))
    path = tmp_path / "config.json"
    write_config(path, {"auths": {"127.0.0.1:5999": {"auth": b64("shadowed:pw")}},
                        "credHelpers": {"127.0.0.1:5999": "stub"}, "credsStore": "hub"})
    source = DockerCredentials(path=path)
    with caplog.at_level(logging.DEBUG):
        found = await source.lookup(IMAGE)
        hub = await source.lookup("someuser/private:1")
    assert found.credentials == RegistryCredentials(server="127.0.0.1:5999", username="bob", password=SECRET)
    assert found.source == "credential helper docker-credential-stub"
    assert (helpers / "stub.args").read_text().strip() == "get"
    assert (helpers / "stub.stdin").read_text() == "127.0.0.1:5999"
    assert hub.credentials == RegistryCredentials(server="https://index.docker.io/v1/", identity_token=SECRET)
    assert (helpers / "hub.stdin").read_text() == "https://index.docker.io/v1/"
    assert SECRET not in caplog.text and SECRET not in repr(found) and SECRET not in repr(hub)


async def test_helper_without_credentials_pulls_anonymously(tmp_path: Path, helpers: Path) -> None:
    stub_helper(helpers, "stub", answer="credentials not found in native keychain", exit_code=1)
    path = tmp_path / "config.json"
    write_config(path, {"credsStore": "stub"})
    found = await DockerCredentials(path=path).lookup(IMAGE)
    assert found.credentials is None
    assert found.describe() == ("no credentials were found for 127.0.0.1:5999 "
                                "(credential helper docker-credential-stub (it has none))")


@pytest.mark.parametrize(("helper", "message"), [
    ({}, "credential helper docker-credential-absent for registry 127.0.0.1:5999 is not installed "
         "(not found on PATH)"),
    ({"answer": "pass store is locked", "exit_code": 3},
     "credential helper docker-credential-absent for registry 127.0.0.1:5999 failed (exit 3): pass store is locked"),
    ({"answer": json.dumps({"Username": "bob", "Secret": SECRET}), "exit_code": 1},
     "failed (exit 1): its output is not shown"),
    ({"answer": f"garbage {SECRET}"}, "for registry 127.0.0.1:5999: its answer is not JSON"),
    ({"sleep": 5}, "did not answer within 0.5s"),
])
async def test_a_helper_that_is_missing_or_fails_is_a_terminal_error(
        tmp_path: Path, helpers: Path, helper: dict[str, object], message: str) -> None:
    if helper:
        stub_helper(helpers, "absent", **helper)  # type: ignore[arg-type]
    path = tmp_path / "config.json"
    write_config(path, {"credHelpers": {"127.0.0.1:5999": "absent"}})
    with pytest.raises(ContainerError) as err:
        await DockerCredentials(path=path, helper_timeout=0.5).lookup(IMAGE)
    assert message in str(err.value)
    assert not err.value.transient
    assert SECRET not in str(err.value)
