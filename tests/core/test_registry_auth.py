"""Registry credentials from a Docker client configuration: reference -> registry host, config
parsing and matching (tables), a helper's answer, refusals and redaction."""

from __future__ import annotations

import base64
import json

import pytest

from daprdockr.core.registry_auth import (
    DOCKER_HUB_SERVER,
    CredentialLookup,
    HelperLookup,
    RegistryCredentials,
    config_key_host,
    helper_credentials,
    is_auth_refusal,
    parse_docker_config,
    qualified_reference,
    redact,
    registry_host,
)
from daprdockr.errors import ValidationError


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(("image", "host", "qualified"), [
    ("alpine", "docker.io", "docker.io/alpine"),
    ("alpine:3.19", "docker.io", "docker.io/alpine:3.19"),
    ("library/alpine@sha256:" + "a" * 64, "docker.io", "docker.io/library/alpine@sha256:" + "a" * 64),
    ("someuser/private:1", "docker.io", "docker.io/someuser/private:1"),
    ("docker.io/someuser/private", "docker.io", "docker.io/someuser/private"),
    ("index.docker.io/someuser/private", "docker.io", "index.docker.io/someuser/private"),
    ("registry-1.docker.io/x/y:1", "docker.io", "registry-1.docker.io/x/y:1"),
    ("localhost/x", "localhost", "localhost/x"),
    ("localhost:5000/x/y:2", "localhost:5000", "localhost:5000/x/y:2"),
    ("127.0.0.1:5000/priv/bb:1", "127.0.0.1:5000", "127.0.0.1:5000/priv/bb:1"),
    ("ghcr.io/org/app:v1", "ghcr.io", "ghcr.io/org/app:v1"),
    ("registry.example.com/a/b/c", "registry.example.com", "registry.example.com/a/b/c"),
    ("myhost:443/app", "myhost:443", "myhost:443/app"),
    ("myhost/app", "docker.io", "docker.io/myhost/app"),  # no dot, no port, not localhost: a Hub user
])
def test_reference_to_registry_host(image: str, host: str, qualified: str) -> None:
    assert registry_host(image) == host
    assert qualified_reference(image) == qualified
    assert registry_host(qualified) == host


@pytest.mark.parametrize(("key", "host"), [
    ("https://index.docker.io/v1/", "docker.io"),
    ("index.docker.io", "docker.io"),
    ("docker.io", "docker.io"),
    ("https://registry-1.docker.io", "docker.io"),
    ("registry.example.com", "registry.example.com"),
    ("https://registry.example.com/v1/", "registry.example.com"),
    ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
    ("127.0.0.1:5000", "127.0.0.1:5000"),
    (" ghcr.io ", "ghcr.io"),
])
def test_config_key_to_host(key: str, host: str) -> None:
    assert config_key_host(key) == host


def creds(server: str, user: str = "", password: str = "", token: str = "") -> RegistryCredentials:
    return RegistryCredentials(server=server, username=user, password=password, identity_token=token)


CONFIG = {
    "auths": {
        "https://index.docker.io/v1/": {"auth": b64("hubuser:hub:pw")},  # the password may hold ':'
        "127.0.0.1:5000": {"username": "alice", "password": "pw1"},
        "https://registry.example.com/v1/": {"identitytoken": "tok"},
        "empty.example.com": {},  # the secret lives in a helper
        "email.example.com": {"email": "a@b"},
        "helped.example.com": {"auth": b64("u:shadowed")},
    },
    "credHelpers": {"helped.example.com": "stub", "https://ecr.example.com": "ecr-login"},
}


@pytest.mark.parametrize(("config", "host", "found"), [
    (CONFIG, "docker.io", creds(DOCKER_HUB_SERVER, "hubuser", "hub:pw")),
    (CONFIG, "index.docker.io", creds(DOCKER_HUB_SERVER, "hubuser", "hub:pw")),
    (CONFIG, "127.0.0.1:5000", creds("127.0.0.1:5000", "alice", "pw1")),
    (CONFIG, "registry.example.com", creds("registry.example.com", token="tok")),
    (CONFIG, "empty.example.com", None),
    (CONFIG, "email.example.com", None),
    (CONFIG, "other.example.com", None),
    (CONFIG, "127.0.0.1:5001", None),  # the port is part of the host
    # a registry's own helper wins over its auths entry
    (CONFIG, "helped.example.com", HelperLookup(helper="stub", server="helped.example.com")),
    (CONFIG, "ecr.example.com", HelperLookup(helper="ecr-login", server="ecr.example.com")),
    # credsStore serves every registry without a helper of its own, Docker Hub under its URL
    ({**CONFIG, "credsStore": "pass"}, "docker.io", HelperLookup(helper="pass", server=DOCKER_HUB_SERVER)),
    ({**CONFIG, "credsStore": "pass"}, "127.0.0.1:5000", HelperLookup(helper="pass", server="127.0.0.1:5000")),
    ({**CONFIG, "credsStore": "pass"}, "helped.example.com", HelperLookup(helper="stub", server="helped.example.com")),
    ({"credHelpers": {"docker.io": "hub"}}, "docker.io", HelperLookup(helper="hub", server=DOCKER_HUB_SERVER)),
    ({"auths": {"docker.io": {"username": "u", "password": "p"}}}, "docker.io", creds(DOCKER_HUB_SERVER, "u", "p")),
    ({}, "docker.io", None),
    ({"credsStore": ""}, "docker.io", None),
    ({"auths": None, "credHelpers": None, "psFormat": "x"}, "docker.io", None),
])
def test_config_lookup(config: dict[str, object], host: str, found: object) -> None:
    assert parse_docker_config(json.dumps(config)).lookup(host) == found


def test_empty_file_is_no_credentials() -> None:
    assert parse_docker_config("").lookup("docker.io") is None


@pytest.mark.parametrize(("text", "message"), [
    ("{", "not JSON"),
    ("[]", "not a JSON object"),
    ('{"auths": []}', "auths is not an object"),
    ('{"credHelpers": 1}', "credHelpers is not an object"),
    ('{"auths": {"h": 1}}', "auths['h'] is not an object"),
    ('{"auths": {"h": {"auth": "%%%SECRETPW"}}}', "auths['h']: auth is not base64"),
    (json.dumps({"auths": {"h": {"auth": b64("nocolonSECRETPW")}}}), "auths['h']: auth is not base64"),
    ('{"auths": {"h": {"password": 5}}}', "auths['h']: password is not a string"),
    ('{"credHelpers": {"h": "../../bin/sh"}}', "credHelpers['h'] is not a credential helper name"),
    ('{"credsStore": "a b"}', "credsStore is not a credential helper name"),
])
def test_bad_config_is_a_clear_error_without_secrets(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_docker_config(text)
    assert message in str(err.value)
    assert "SECRETPW" not in str(err.value)


@pytest.mark.parametrize(("output", "found"), [
    ('{"ServerURL": "h", "Username": "bob", "Secret": "pw"}', creds("h", "bob", "pw")),
    ('{"Username": "<token>", "Secret": "idtok"}', creds("h", token="idtok")),
    ('{"Username": "bob", "Secret": ""}', None),
])
def test_helper_answer(output: str, found: RegistryCredentials | None) -> None:
    assert helper_credentials(output, server="h") == found


@pytest.mark.parametrize("output", ["not json SECRETPW", '["SECRETPW"]', '{"Username": 1, "Secret": "SECRETPW"}'])
def test_bad_helper_answer_is_refused_without_its_output(output: str) -> None:
    with pytest.raises(ValidationError) as err:
        helper_credentials(output, server="h")
    assert "SECRETPW" not in str(err.value)


def test_header_and_secrets() -> None:
    login = creds("127.0.0.1:5000", "alice", "pw1")
    assert login.header() == {"username": "alice", "password": "pw1", "serveraddress": "127.0.0.1:5000"}
    assert set(login.secrets()) == {"pw1", b64("alice:pw1")}
    token = creds("h", token="tok")
    assert token.header() == {"identitytoken": "tok", "serveraddress": "h"}
    assert token.secrets() == ("tok",)
    assert "pw1" not in repr(login) and "tok" not in repr(token)


@pytest.mark.parametrize(("message", "refusal"), [
    ('Head "http://127.0.0.1:34205/v2/priv/bb/manifests/1": no basic auth credentials', True),
    ("unauthorized: authentication required", True),
    ("pull access denied for x, repository does not exist or may require 'docker login'", True),
    ("denied: requested access to the resource is denied", True),
    ("received unexpected HTTP status: 401 Unauthorized", True),
    ("unexpected status code 403 Forbidden", True),
    ("manifest for 127.0.0.1:40123/priv/nope:1 not found: manifest unknown", False),
    ('Get "http://127.0.0.1:40123/v2/": dial tcp 127.0.0.1:40123: connect: connection refused', False),
    ("open /var/lib/docker/tmp/x: permission denied", False),
])
def test_auth_refusal(message: str, refusal: bool) -> None:
    assert is_auth_refusal(message) is refusal


def test_redact_and_describe() -> None:
    assert redact("a pw1 b YWxpY2U6cHcx", ("pw1", "YWxpY2U6cHcx")) == "a *** b ***"
    assert redact("nothing", ()) == "nothing"
    found = CredentialLookup(host="h:1", credentials=creds("h:1", "u", "p"), source="auths of /c.json")
    assert found.describe() == "the credentials for h:1 from auths of /c.json were refused"
    none = CredentialLookup(host="h:1", credentials=None, source="/c.json does not exist")
    assert none.describe() == "no credentials were found for h:1 (/c.json does not exist)"
