"""ACME for the whole cluster: every agent started with ``--acme-directory`` runs this component,
and for each host that needs a certificate (:mod:`daprdockr.core.acme_plan`) exactly one agent at a
time orders it.

One pass (:meth:`AcmeManager.manage_once`): read ``<prefix>-tls/`` and the services; for every due
host, concurrently: take the host's lock on this agent's lease (a transaction: only if absent),
check again that the host still needs a certificate, order (certbot's ``acme`` in a thread,
:mod:`daprdockr.adapters.acme_client`), publish the HTTP-01 answers in etcd on the lease (every
agent's nginx answers ``/.well-known/acme-challenge/`` from them, so it does not matter which node
the CA reaches), tell the CA, wait for the chain, store the certificate (source ``acme``: every
agent serves it), delete the answers, unlock.  A failure is written to the host's order record
(failures, last error, next try after a capped exponential backoff), which ``cert ls`` shows and
every agent honours.  An agent that dies mid-order loses its lease, hence the lock and the
answers: at its next pass another agent takes the host over with a new order.

The account key lives in etcd (``acme/account``, created only if absent: concurrent first agents
end with one account).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable

from daprdockr.adapters.acme_client import AcmeClient, new_account_key
from daprdockr.adapters.tls_store import TlsStore
from daprdockr.agent.config import AcmeSettings
from daprdockr.core.acme_plan import HeldCert, Need, OrderStatus, after_failure, due, needs, wanted_hosts
from daprdockr.core.acme_records import MAX_TEXT, AcmeAccount, AcmeOrder
from daprdockr.core.backoff import Backoff
from daprdockr.core.model import ServiceSpec
from daprdockr.core.tls import CertRecord
from daprdockr.core.tls_state import TlsState
from daprdockr.errors import ConflictError, DaprDockrError

log = logging.getLogger(__name__)
RESULTS = ("issued", "failed")


class AcmeManager:
    """The ``acme`` component (start / run / stop, and :meth:`manage_once` for tests)."""

    name = "acme"

    def __init__(self, *, tls: TlsStore, node_id: str, lease: Callable[[], int],
                 services: Callable[[], Iterable[ServiceSpec]], settings: AcmeSettings,
                 clock: Callable[[], float] = time.time) -> None:
        self.tls = tls
        self.node_id = node_id
        self.lease = lease
        self.services = services
        self.settings = settings
        self.clock = clock
        self.retry = Backoff(base=settings.retry_base, factor=2.0, max_delay=6 * 3600.0)
        self.orders_total = dict.fromkeys(RESULTS, 0)
        self.ordering: set[str] = set()  # hosts this agent orders right now
        self.last_error = ""
        self._client: AcmeClient | None = None
        self.wakeup = asyncio.Event()  # set on any etcd change: a pass at once if the HTTPS hosts changed
        self._wanted: frozenset[str] = frozenset()  # the wanted hosts of the last pass

    async def start(self) -> None:
        pass  # (the CA may be unreachable: the passes retry, the agent starts anyway)

    async def run(self) -> None:
        """A pass every ``interval``, and at once when the HTTPS hosts change."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self.manage_once()
            except DaprDockrError as exc:  # (etcd unavailable, the CA unreachable: the next pass)
                self.last_error = str(exc)
                log.warning("ACME pass failed: %s", exc)
            deadline = loop.time() + self.settings.interval
            while loop.time() < deadline and self._wanted_now() == self._wanted:
                self.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, deadline - loop.time())):
                        await self.wakeup.wait()

    async def stop(self) -> None:
        pass

    def _wanted_now(self) -> frozenset[str]:
        return wanted_hosts((s.http_host, s.https.serves_https) for s in self.services())

    # ------------------------------------------------------------------ one pass
    async def manage_once(self) -> list[str]:
        """Order what is due now; the hosts this pass ordered a certificate for (issued or failed)."""
        lease = self.lease()
        if not lease:
            return []
        state, _ = await self.tls.read()
        now = self.clock()
        wanted = self._wanted = self._wanted_now()
        certs = {h: HeldCert(source=r.source, not_before=r.info.not_before, not_after=r.info.not_after)
                 for h, r in state.certs.items()}
        orders = {h: OrderStatus(failures=o.failures, next_try=o.next_try) for h, o in state.orders.items()}
        todo = due(needs(wanted=wanted, certs=certs, now=now), orders=orders, locked=set(state.locks), now=now)
        if not todo:
            return []
        client = await self._account(state)
        done = await asyncio.gather(*(self._order(need, client=client, lease=lease) for need in todo),
                                    return_exceptions=True)  # (one host's etcd trouble leaves the others running)
        for need, result in zip(todo, done, strict=True):
            if isinstance(result, DaprDockrError):
                self.last_error = f"{need.host}: {result}"
                log.warning("ACME order for %s not finished: %s", need.host, result)
            elif isinstance(result, BaseException):
                raise result
        return [host for host in done if isinstance(host, str)]

    async def _account(self, state: TlsState) -> AcmeClient:
        """The client of the cluster's account (created and stored on first use)."""
        cfg = self.settings
        if self._client is not None:
            return self._client
        stored = state.account
        if stored is None:
            stored = await self.tls.put_account(AcmeAccount(directory=cfg.directory, email=cfg.email,
                                                            key=new_account_key(), uri=""))
        client = AcmeClient(directory=cfg.directory, account_key=stored.key, email=cfg.email or stored.email,
                            ca_file=cfg.ca_file)
        uri = await client.register()
        if stored.directory == cfg.directory and stored.uri != uri:
            await self.tls.put_account(dataclasses.replace(stored, uri=uri), overwrite=True)
        elif stored.directory != cfg.directory:
            log.warning("the stored ACME account was made at %s; using its key at %s", stored.directory,
                        cfg.directory)
        log.info("ACME account %s at %s", uri, cfg.directory)
        self._client = client
        return client

    async def _order(self, need: Need, *, client: AcmeClient, lease: int) -> str | None:
        """One host, under its lock; the host if this agent ordered (None: another agent has it)."""
        host = need.host
        if not await self.tls.try_lock(host, node=self.node_id, lease=lease):
            return None
        tokens: list[str] = []
        self.ordering.add(host)
        try:
            previous = await self.tls.get_order(host)
            if not await self._still_needed(need, previous):
                return None
            if previous is not None and previous.state == "ordering" and previous.node != self.node_id:
                log.info("taking over the order of %s from %s (its lock went with its lease)", host, previous.node)
            failures = previous.failures if previous is not None else 0
            try:
                rec = await self._issue(host, client=client, lease=lease, failures=failures, tokens=tokens)
            except DaprDockrError as exc:
                await self._failed(host, failures=failures, error=exc)
                return host
            await self.tls.put_order(host, AcmeOrder(node=self.node_id, state="valid", order_url=rec[1],
                                                     updated=self.clock()))
            self.orders_total["issued"] += 1
            log.info("ACME certificate for %s issued (%s, serial %s, valid until %.0f)", host, need.reason,
                     rec[0].info.serial, rec[0].info.not_after)
            return host
        finally:
            self.ordering.discard(host)
            with contextlib.suppress(DaprDockrError):  # (best effort: they go with the lease anyway)
                for token in tokens:
                    await self.tls.delete_challenge(token)
                await self.tls.unlock(host, node=self.node_id)

    async def _still_needed(self, need: Need, previous: AcmeOrder | None) -> bool:
        """Checked under the lock: another agent may have stored the certificate, or failed, since
        this pass read the state."""
        now = self.clock()
        if previous is not None and previous.next_try > now:
            return False
        try:
            rec = await self.tls.get_cert(need.host)
        except ConflictError:
            return True  # (a malformed value: replaced)
        if rec is None:
            return True
        held = HeldCert(source=rec.source, not_before=rec.info.not_before, not_after=rec.info.not_after)
        return bool(needs(wanted=[need.host], certs={need.host: held}, now=now))

    async def _issue(self, host: str, *, client: AcmeClient, lease: int, failures: int,
                     tokens: list[str]) -> tuple[CertRecord, str]:
        """Order, prove, finalize and store; the stored record and the order's URL."""
        session = await client.order(host)
        await self.tls.put_order(host, AcmeOrder(node=self.node_id, state="ordering", order_url=session.url,
                                                 failures=failures, updated=self.clock()))
        for ch in session.challenges:
            await self.tls.put_challenge(ch.token, host=host, authorization=ch.authorization, lease=lease)
            tokens.append(ch.token)
        if session.challenges:
            await asyncio.sleep(self.settings.challenge_wait)  # (every agent's watch hands it to its nginx)
            await session.answer()
        chain = await session.finalize(within=self.settings.order_timeout)
        rec = CertRecord.make(host=host, cert_pem=chain, key_pem=session.key_pem, source="acme", now=self.clock())
        await self.tls.put_cert(rec)
        return rec, session.url

    async def _failed(self, host: str, *, failures: int, error: DaprDockrError) -> None:
        now = self.clock()
        status = after_failure(failures, now=now, retry=self.retry)
        self.orders_total["failed"] += 1
        self.last_error = f"{host}: {error}"
        log.warning("ACME order for %s failed (%d in a row, next try in %.0fs): %s", host, status.failures,
                    status.next_try - now, error)
        try:
            await self.tls.put_order(host, AcmeOrder(node=self.node_id, state="failed", failures=status.failures,
                                                     last_error=str(error)[:MAX_TEXT], next_try=status.next_try,
                                                     updated=now))
        except DaprDockrError as exc:
            log.warning("could not record the failed order of %s: %s", host, exc)
