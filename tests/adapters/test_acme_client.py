"""The ACME adapter against Debian's real pebble: account, order, HTTP-01 answered by a test HTTP
server, finalization, the chain issued by pebble's root; and its errors, transient or terminal."""

from __future__ import annotations

import asyncio
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from acme import client, messages
from cryptography import x509

from daprdockr.adapters.acme_client import AcmeClient, new_account_key, translate
from daprdockr.errors import AcmeError
from tests.conftest import missing
from tests.support.pebble import Pebble, pebble_server
from tests.support.procs import free_port


class _Tokens(http.server.BaseHTTPRequestHandler):
    tokens: dict[str, str] = {}

    def do_GET(self) -> None:
        token = self.path.rsplit("/", 1)[-1]
        value = self.tokens.get(token) if self.path.startswith("/.well-known/acme-challenge/") else None
        self.send_response(200 if value is not None else 404)
        self.end_headers()
        if value is not None:
            self.wfile.write(value.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[Pebble]:
    if not shutil.which("pebble"):
        missing("pebble (apt-get install pebble)")
    with pebble_server(tmp_path / "pebble", http_port=free_port()) as p:
        yield p


@pytest.fixture
def answers(pebble: Pebble) -> Iterator[dict[str, str]]:
    """token -> key authorization, served on 127.0.0.1:<pebble's http port> like the agents' nginx."""
    tokens: dict[str, str] = {}
    handler = type("Handler", (_Tokens,), {"tokens": tokens})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", pebble.http_port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield tokens
    finally:
        server.shutdown()
        server.server_close()


def _client(pebble: Pebble, key: str | None = None) -> AcmeClient:
    return AcmeClient(directory=pebble.directory, account_key=key or new_account_key(), email="ops@example.com",
                      ca_file=str(pebble.ca_file), timeout=10)


async def test_an_order_is_issued_by_the_ca_after_its_challenge_is_answered(
    pebble: Pebble, answers: dict[str, str]
) -> None:
    pebble.dns["www.acme.test"] = "127.0.0.1"
    acme = _client(pebble)
    uri = await acme.register()
    assert uri.startswith("https://127.0.0.1:")
    session = await acme.order("www.acme.test")
    assert session.url and len(session.challenges) == 1
    for ch in session.challenges:
        answers[ch.token] = ch.authorization
        assert ch.authorization.startswith(ch.token + ".")
    await session.answer()
    chain = await session.finalize(within=30)
    certs = x509.load_pem_x509_certificates(chain.encode())
    leaf = certs[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == ["www.acme.test"]
    root = x509.load_pem_x509_certificate(pebble.root_pem.encode())
    leaf.verify_directly_issued_by(certs[1])
    certs[-1].verify_directly_issued_by(root)
    assert "BEGIN PRIVATE KEY" in session.key_pem
    assert pebble.orders_issued() == 1


async def test_the_same_key_finds_its_account_again(pebble: Pebble) -> None:
    key = new_account_key()
    first = await _client(pebble, key).register()
    assert await _client(pebble, key).register() == first
    assert await _client(pebble).register() != first


async def test_concurrent_first_registrations_of_one_key_all_find_the_account(pebble: Pebble) -> None:
    """Found in a full suite: three agents registering the cluster's new account key at once; pebble
    created it for one and answered another serverInternal ("Error saving account"), so that
    agent's whole ACME pass failed.  Every registration of the key ends with the one account."""
    for _ in range(3):  # (a race: several rounds of 8, each with a fresh key)
        key = new_account_key()
        uris = await asyncio.gather(*(_client(pebble, key).register() for _ in range(8)))
        assert len(set(uris)) == 1 and uris[0].startswith("https://"), uris


async def test_a_registration_the_ca_answers_server_internal_is_asked_again(
        pebble: Pebble, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race above is rare (not reproduced in 300 rounds here): the CA's answer is injected
    once, in front of the real pebble; the registration asks again and finds the account."""
    real = client.ClientV2.new_account
    refused: list[int] = []

    def flaky(self: client.ClientV2, new_account: messages.NewRegistration) -> messages.RegistrationResource:
        if not refused:
            refused.append(1)
            raise messages.Error.with_code("serverInternal", detail="Error saving account")
        return real(self, new_account)

    monkeypatch.setattr(client.ClientV2, "new_account", flaky)
    key = new_account_key()
    uri = await _client(pebble, key).register()
    assert refused == [1] and uri.startswith("https://")
    monkeypatch.setattr(client.ClientV2, "new_account", real)
    assert await _client(pebble, key).register() == uri  # (the same account)


async def test_a_challenge_nobody_answers_fails_the_order_terminally(pebble: Pebble, answers: dict[str, str]) -> None:
    pebble.dns["nobody.acme.test"] = "127.0.0.1"
    session = await _client(pebble).order("nobody.acme.test")
    await session.answer()  # (nothing published: the test server answers 404)
    with pytest.raises(AcmeError) as failed:
        await session.finalize(within=30)
    assert not failed.value.transient
    assert "nobody.acme.test" in str(failed.value)


async def test_a_directory_whose_tls_the_ca_file_does_not_trust_is_terminal(pebble: Pebble, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    other.write_text(pebble.root_pem)  # a CA, but not the one of pebble's listener
    acme = AcmeClient(directory=pebble.directory, account_key=new_account_key(), email="", ca_file=str(other))
    with pytest.raises(AcmeError, match="acme-ca-file") as failed:
        await acme.register()
    assert not failed.value.transient


async def test_an_unreachable_directory_is_transient() -> None:
    acme = AcmeClient(directory=f"https://127.0.0.1:{free_port()}/dir", account_key=new_account_key(), email="",
                      timeout=2)
    with pytest.raises(AcmeError, match="unreachable") as failed:
        await acme.register()
    assert failed.value.transient


def test_a_stored_account_key_that_does_not_parse_is_a_clear_terminal_error() -> None:
    with pytest.raises(AcmeError, match="account key does not parse") as failed:
        AcmeClient(directory="https://127.0.0.1:1/dir", account_key="{not json", email="")
    assert not failed.value.transient


@pytest.mark.parametrize(("problem", "transient"), [
    ("urn:ietf:params:acme:error:rateLimited", True),
    ("urn:ietf:params:acme:error:serverInternal", True),
    ("urn:ietf:params:acme:error:badNonce", True),
    ("urn:ietf:params:acme:error:rejectedIdentifier", False),
    ("urn:ietf:params:acme:error:unauthorized", False),
    ("urn:ietf:params:acme:error:caa", False),
])
def test_acme_problems_are_transient_only_when_retrying_may_help(problem: str, transient: bool) -> None:
    error = translate(messages.Error(typ=problem, detail="because"), what="ordering")
    assert error.transient is transient
    assert "because" in str(error) and str(error).startswith("ordering: ")
