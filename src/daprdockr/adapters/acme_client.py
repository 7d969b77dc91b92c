"""An ACME CA (RFC 8555) as the agent uses it: certbot's ``acme`` library, which blocks (``requests``),
run in threads; every library error is translated into :class:`~daprdockr.errors.AcmeError`
(transient or terminal).

One order is one :class:`AcmeOrderSession`: :meth:`AcmeClient.order` creates it (a new key and CSR
for the host, the order, its pending HTTP-01 challenges), the caller publishes the challenges
(etcd, where every agent's nginx answers them), then :meth:`AcmeOrderSession.answer` and
:meth:`AcmeOrderSession.finalize` (the chain in PEM).  Each session has a client of its own, so
orders of several hosts may run at once in different threads.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import josepy.errors
import requests
from acme import challenges, client, crypto_util, messages
from acme import errors as acme_errors
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

from daprdockr.errors import AcmeError

log = logging.getLogger(__name__)
T = TypeVar("T")
USER_AGENT = "daprdockr"
# ACME problem types worth retrying as they are (RFC 8555 section 6.7); any other is the CA's refusal
TRANSIENT_PROBLEMS = frozenset({"badNonce", "rateLimited", "serverInternal"})
REGISTER_ATTEMPTS = 3


def new_account_key() -> str:
    """A new account key (EC P-256) as JWK JSON: what ``<prefix>-tls/acme/account`` keeps."""
    return str(JWKEC(key=ec.generate_private_key(ec.SECP256R1())).json_dumps())


def new_cert_key() -> str:
    """A new certificate key (EC P-256), PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def load_account_key(text: str) -> JWK:
    try:
        return JWK.json_loads(text)
    except (josepy.errors.Error, ValueError, TypeError) as exc:
        raise AcmeError(f"the stored ACME account key does not parse: {exc}", transient=False) from exc


def translate(exc: BaseException, *, what: str) -> AcmeError:
    """The project's error for a library exception raised while doing ``what``."""
    if isinstance(exc, AcmeError):
        return exc
    if isinstance(exc, requests.exceptions.SSLError):
        return AcmeError(f"{what}: TLS to the ACME directory failed (is --acme-ca-file right?): {exc}",
                         transient=False)
    if isinstance(exc, requests.exceptions.RequestException):
        return AcmeError(f"{what}: ACME directory unreachable: {exc}", transient=True)
    if isinstance(exc, messages.Error):
        code = exc.code or ""
        return AcmeError(f"{what}: the CA answered {code or exc.typ}: {exc.detail or exc}",
                         transient=code in TRANSIENT_PROBLEMS)
    if isinstance(exc, acme_errors.TimeoutError):
        return AcmeError(f"{what}: the CA did not finish in time", transient=True)
    if isinstance(exc, acme_errors.ValidationError):
        return AcmeError(f"{what}: {' '.join(str(exc).split())}", transient=False)
    if isinstance(exc, acme_errors.IssuanceError):
        return AcmeError(f"{what}: the CA refused to issue: {exc.error.detail or exc.error}", transient=False)
    return AcmeError(f"{what}: {type(exc).__name__}: {exc}", transient=False)


async def _call(what: str, fn: Callable[[], T]) -> T:
    """``fn()`` in a thread, its exceptions translated (``what`` names the step in the message)."""
    try:
        return await asyncio.to_thread(fn)
    except (acme_errors.Error, messages.Error, requests.exceptions.RequestException, josepy.errors.Error,
            ValueError, KeyError) as exc:
        raise translate(exc, what=what) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingChallenge:
    """An HTTP-01 challenge: ``/.well-known/acme-challenge/<token>`` must answer ``authorization``."""

    token: str
    authorization: str


class AcmeOrderSession:
    """One order in progress: its URL, the certificate's new key, the challenges to publish."""

    def __init__(self, *, acme: client.ClientV2, host: str, key_pem: str, order: messages.OrderResource,
                 pending: list[tuple[messages.ChallengeBody, challenges.ChallengeResponse, PendingChallenge]]) -> None:
        self._acme = acme
        self._order = order
        self._pending = pending
        self.host = host
        self.key_pem = key_pem

    @property
    def url(self) -> str:
        return str(self._order.uri or "")

    @property
    def challenges(self) -> tuple[PendingChallenge, ...]:
        return tuple(p for _, _, p in self._pending)

    async def answer(self) -> None:
        """Tell the CA every challenge is ready (publish them first: it may fetch them at once)."""
        def run() -> None:
            for challb, response, _ in self._pending:
                self._acme.answer_challenge(challb, response)
        await _call(f"answering the challenge for {self.host}", run)

    async def finalize(self, *, within: float) -> str:
        """Wait (at most ``within`` seconds: the library's deadline, which a thread cannot be cancelled
        before) until the CA validated the challenges, finalize, and return the chain (PEM)."""
        def run() -> str:
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=within)
            done = self._acme.poll_and_finalize(self._order, deadline)
            return str(done.fullchain_pem)
        chain = await _call(f"finalizing the order for {self.host}", run)
        if "BEGIN CERTIFICATE" not in chain:
            raise AcmeError(f"the CA returned no certificate for {self.host}", transient=True)
        return chain


class AcmeClient:
    """The CA at ``directory`` (its HTTPS trusted with ``ca_file``, else the system's roots), used
    with one account key (JWK JSON).  :meth:`register` finds or creates the account."""

    def __init__(self, *, directory: str, account_key: str, email: str, ca_file: str | None = None,
                 timeout: int = 30) -> None:
        self.directory_url = directory
        self.email = email
        self.ca_file = ca_file
        self.timeout = timeout
        self.key = load_account_key(account_key)
        self.account_uri: str | None = None
        self._directory: messages.Directory | None = None

    def _net(self, account: messages.RegistrationResource | None = None) -> client.ClientNetwork:
        # requests takes a CA bundle path where the library's annotation says bool
        verify = cast(Any, self.ca_file) if self.ca_file else True
        return client.ClientNetwork(self.key, account=account, alg=ES256, verify_ssl=verify,
                                    user_agent=USER_AGENT, timeout=self.timeout)

    def _client(self) -> client.ClientV2:
        """A client of its own (a thread each), registered: one account lookup per call."""
        net = self._net()
        if self._directory is None:
            self._directory = client.ClientV2.get_directory(self.directory_url, net)
        acme = client.ClientV2(self._directory, net)
        for attempt in range(1, REGISTER_ATTEMPTS + 1):
            try:
                regr = acme.new_account(messages.NewRegistration.from_data(
                    email=self.email or None, terms_of_service_agreed=True))
            except acme_errors.ConflictError as exists:  # this key has an account: its URL
                regr = messages.RegistrationResource(uri=exists.location, body=messages.Registration())
                net.account = regr
            except messages.Error as exc:
                # agents registering the cluster's new key at once: the CA may make the account for
                # one and answer another serverInternal (pebble did); asked again, it finds it
                if (exc.code or "") not in TRANSIENT_PROBLEMS or attempt == REGISTER_ATTEMPTS:
                    raise
                log.info("registering the ACME account: the CA answered %s; asking again", exc.code)
                time.sleep(0.2 * attempt)  # (in the client's own thread)
                continue
            break
        self.account_uri = regr.uri
        return acme

    async def register(self) -> str:
        """The account's URL (created with the e-mail address when the CA does not know the key)."""
        await _call("registering the ACME account", self._client)
        return str(self.account_uri)

    async def order(self, host: str) -> AcmeOrderSession:
        """A new order for ``host`` with a new key; its HTTP-01 challenges still to answer."""
        def run() -> AcmeOrderSession:
            acme = self._client()
            key_pem = new_cert_key()
            order = acme.new_order(crypto_util.make_csr(key_pem.encode(), [host]))
            pending = []
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # (the CA reused a valid authorization: nothing to prove)
                challb = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
                if challb is None:
                    raise AcmeError(f"the CA offers no http-01 challenge for {host}", transient=False)
                response, validation = challb.response_and_validation(self.key)
                token = challb.chall.encode("token")
                pending.append((challb, response, PendingChallenge(token=token, authorization=validation)))
            return AcmeOrderSession(acme=acme, host=host, key_pem=key_pem, order=order, pending=pending)
        return await _call(f"ordering a certificate for {host}", run)
