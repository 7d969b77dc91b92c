"""Registry credentials from a Docker client configuration (``~/.docker/config.json``), pure parts.

The engine API does not read the client's configuration (the ``docker`` CLI does), so the agent
reads it itself, as Nomad does (``auth.config``, ``auth.helper``):

* :func:`registry_host`: the registry an image reference pulls from, by Docker's rules: a first
  path component with a dot or a colon, or ``localhost``, is a host; anything else is Docker
  Hub (``docker.io``, whose configuration key is ``https://index.docker.io/v1/``).
* :func:`parse_docker_config`: ``auths`` (``auth``: base64 of ``user:password``, or
  ``username``/``password``, or ``identitytoken``), ``credHelpers`` (registry host -> helper)
  and ``credsStore`` (the helper for every other registry).  Keys may be URLs
  (``https://host/v1/``) or bare ``host[:port]``; every Docker Hub alias is one registry.
* :meth:`DockerConfig.lookup`: Docker's order: the registry's own helper, else the default
  helper, else its ``auths`` entry.
* :func:`helper_credentials`: a helper's ``get`` answer (``{"Username", "Secret"}``; the user
  ``<token>`` means an identity token).
* :func:`is_auth_refusal` and :func:`redact` for the error of a refused pull.

Secrets never reach a ``repr``, an error message or a log line from here: errors name the key
and the field, never a value.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from daprdockr.errors import ValidationError

DOCKER_HUB = "docker.io"
DOCKER_HUB_SERVER = "https://index.docker.io/v1/"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
_HELPER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TOKEN_USER = "<token>"  # a helper's Username meaning "the Secret is an identity token"
_REFUSALS = re.compile(
    r"no basic auth credentials|unauthorized|authentication required|pull access denied|denied: requested access"
    r"|access to the resource is denied|\b403 forbidden|\b401\b", re.IGNORECASE)


def _hub_or(host: str) -> str:
    return DOCKER_HUB if host.lower() in _HUB_ALIASES else host


def registry_host(image: str) -> str:
    """The registry ``image`` pulls from: ``host[:port]``, or ``docker.io``."""
    first, slash, _ = image.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        return DOCKER_HUB
    return _hub_or(first)


def qualified_reference(image: str) -> str:
    """``image`` with its registry written out (``alpine`` -> ``docker.io/alpine``): the engine
    normalises it back, and a pull with credentials needs the host in the reference."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"{DOCKER_HUB}/{image}"


def config_key_host(key: str) -> str:
    """A configuration key (``https://host/v1/``, ``host:port``, ``index.docker.io``) as a registry host."""
    text = key.strip()
    for scheme in ("https://", "http://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme):]
            break
    return _hub_or(text.partition("/")[0])


def server_address(host: str) -> str:
    """The server URL Docker's client gives a credential helper for ``host``."""
    return DOCKER_HUB_SERVER if host == DOCKER_HUB else host


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryCredentials:
    """A login for one registry; the secrets stay out of ``repr``."""

    server: str
    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)

    def header(self) -> dict[str, str]:
        """The ``X-Registry-Auth`` object for the engine (aiodocker's ``auth=``)."""
        if self.identity_token:
            return {"identitytoken": self.identity_token, "serveraddress": self.server}
        return {"username": self.username, "password": self.password, "serveraddress": self.server}

    def secrets(self) -> tuple[str, ...]:
        """Every string that must never be shown: the secrets and the encodings they travel in."""
        found = [s for s in (self.password, self.identity_token) if s]
        if self.password:
            found.append(base64.b64encode(f"{self.username}:{self.password}".encode()).decode())
        return tuple(found)


@dataclass(frozen=True, slots=True)
class HelperLookup:
    """Credentials are to be asked of ``docker-credential-<helper> get`` for ``server``."""

    helper: str
    server: str

    @property
    def program(self) -> str:
        return f"docker-credential-{self.helper}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DockerConfig:
    """The registry parts of a Docker client configuration, keyed by registry host."""

    auths: Mapping[str, RegistryCredentials] = field(default_factory=dict)
    cred_helpers: Mapping[str, str] = field(default_factory=dict)
    creds_store: str = ""

    def lookup(self, host: str) -> RegistryCredentials | HelperLookup | None:
        """Where ``host``'s credentials are, in Docker's order: its own helper, the default
        helper, its ``auths`` entry; None: nowhere (pull anonymously)."""
        host = _hub_or(host)
        if helper := self.cred_helpers.get(host) or self.creds_store:
            return HelperLookup(helper=helper, server=server_address(host))
        return self.auths.get(host)


def _text(entry: Mapping[str, Any], name: str, *, where: str) -> str:
    value = entry.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError(f"{where}: {name} is not a string")
    return value


def _auth_entry(key: str, entry: object) -> RegistryCredentials | None:
    where = f"auths[{key!r}]"
    if not isinstance(entry, Mapping):
        raise ValidationError(f"{where} is not an object")
    username, password = _text(entry, "username", where=where), _text(entry, "password", where=where)
    if encoded := _text(entry, "auth", where=where):
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ValidationError(f"{where}: auth is not base64 of user:password") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise ValidationError(f"{where}: auth is not base64 of user:password")
    token = _text(entry, "identitytoken", where=where)
    if not token and not (username and password):
        return None  # an empty entry (the secret is in a helper) or only an email
    return RegistryCredentials(server=server_address(config_key_host(key)), username=username,
                               password=password, identity_token=token)


def _helper_name(value: object, *, where: str) -> str:
    if not isinstance(value, str) or not _HELPER_NAME.match(value):
        raise ValidationError(f"{where} is not a credential helper name (letters, digits, . _ -)")
    return value


def parse_docker_config(text: str) -> DockerConfig:
    """The registry parts of a ``config.json``; ValidationError (naming the key, never a
    secret) when it is not JSON or a part has the wrong shape.  Other fields are ignored."""
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise ValidationError(f"not JSON (line {getattr(exc, 'lineno', '?')})") from None
    if not isinstance(data, dict):
        raise ValidationError("not a JSON object")
    auths_in, helpers_in = data.get("auths"), data.get("credHelpers")
    auths_in, helpers_in = {} if auths_in is None else auths_in, {} if helpers_in is None else helpers_in
    if not isinstance(auths_in, dict):
        raise ValidationError("auths is not an object")
    if not isinstance(helpers_in, dict):
        raise ValidationError("credHelpers is not an object")
    auths: dict[str, RegistryCredentials] = {}
    for key, entry in auths_in.items():
        if (creds := _auth_entry(key, entry)) is not None:
            auths.setdefault(config_key_host(key), creds)
    helpers = {config_key_host(k): _helper_name(v, where=f"credHelpers[{k!r}]") for k, v in helpers_in.items()}
    store = data.get("credsStore") or ""
    return DockerConfig(auths=auths, cred_helpers=helpers,
                        creds_store=_helper_name(store, where="credsStore") if store else "")


def helper_credentials(output: str, *, server: str) -> RegistryCredentials | None:
    """A helper's ``get`` answer (``{"ServerURL", "Username", "Secret"}``); None when it holds no
    secret.  ValidationError (without the output) when it is not that shape."""
    try:
        data = json.loads(output)
    except ValueError:
        raise ValidationError("its answer is not JSON") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k, ""), str) for k in ("Username", "Secret")):
        raise ValidationError('its answer is not {"Username": ..., "Secret": ...}')
    username, secret = str(data.get("Username", "")), str(data.get("Secret", ""))
    if not secret:
        return None
    if username == TOKEN_USER:
        return RegistryCredentials(server=server, identity_token=secret)
    return RegistryCredentials(server=server, username=username, password=secret)


def is_auth_refusal(message: str) -> bool:
    """Whether the engine's pull error says the registry wants (other) credentials."""
    return _REFUSALS.search(message) is not None


def redact(message: str, secrets: tuple[str, ...]) -> str:
    """``message`` with every secret replaced by ``***``."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            message = message.replace(secret, "***")
    return message


@dataclass(frozen=True, slots=True)
class CredentialLookup:
    """What was found for a pull from ``host``: the credentials (None: pull anonymously) and
    where they came from or why there are none (for the log and a refused pull's error)."""

    host: str
    credentials: RegistryCredentials | None
    source: str

    def describe(self) -> str:
        """Whether credentials were found for the registry, and where; never a secret."""
        if self.credentials is not None:
            return f"the credentials for {self.host} from {self.source} were refused"
        return f"no credentials were found for {self.host} ({self.source})"
