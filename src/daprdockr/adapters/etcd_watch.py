"""etcd watches.  :meth:`EtcdWatch.watch` is an endless async iterator of
:class:`~daprdockr.core.mirror.WatchEvent` over the whole prefix that reconnects with exponential
backoff, resumes from the last seen revision, and yields a ``resync`` event after every reconnect (or
compaction) so that level-triggered consumers re-read the full state instead of trusting a possibly
incomplete event stream.  :meth:`EtcdWatch.key_history` reads one key's past writes the same way."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal

import aetcd.exceptions as aetcd_exc
import aetcd.rtypes as aetcd_rtypes

from daprdockr.adapters.etcd_client import EtcdClient
from daprdockr.adapters.etcd_errors import translate
from daprdockr.adapters.etcd_pool import EtcdPool
from daprdockr.cancellation import honour_dropped_cancel, owner_cancelled, within
from daprdockr.core.mirror import WatchEvent
from daprdockr.core.names import ServiceName
from daprdockr.core.removal import KeyEvent
from daprdockr.errors import DaprDockrError, StoreError, StoreUnavailableError

log = logging.getLogger(__name__)


class EtcdWatch(EtcdPool):
    """Watches, each on a client (a gRPC channel) of its own."""

    async def key_history(self, key: str, *, until: int, within: float = 2.0) -> list[KeyEvent]:
        """The writes of one key up to revision ``until``, as etcd still keeps them (a watch from
        the oldest revision not compacted; nothing is written).  Raises StoreError when they
        cannot be read within ``within`` seconds."""
        start = 1
        for _ in range(3):
            client = self._new_client(self._index)
            found: list[KeyEvent] = []
            try:
                async with asyncio.timeout(within):
                    watch = await client.watch(key.encode(), start_revision=start)
                    honour_dropped_cancel()
                    try:
                        async for ev in watch:
                            revision = int(ev.kv.mod_revision)
                            if revision > until:
                                break
                            deleted = ev.kind == aetcd_rtypes.EventKind.DELETE
                            found.append(KeyEvent(revision=revision, value=None if deleted else bytes(ev.kv.value)))
                            if revision == until:
                                break
                    finally:
                        await watch.cancel()
                return found
            except aetcd_exc.RevisionCompactedError as exc:
                start = int(exc.compacted_revision) + 1
            except asyncio.CancelledError:
                if owner_cancelled():
                    raise
                raise StoreUnavailableError("key history read cancelled under us") from None
            except Exception as exc:  # (TimeoutError included)
                raise StoreError(f"cannot read the history of {key}: {translate(exc, what='watch')}",
                                 transient=True) from exc
            finally:
                await self._close_client(client)
        raise StoreError(f"cannot read the history of {key}: compacted while reading", transient=True)

    async def instance_history(self, service: ServiceName, number: int, *, until: int) -> list[KeyEvent]:
        """The writes of an instance key up to revision ``until`` (:meth:`key_history`)."""
        return await self.key_history(self.schema.instance(service, number), until=until)

    async def watch(
        self,
        prefix: str | None = None,
        *,
        start_revision: int | None = None,
        max_backoff: float = 1.0,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Events under ``prefix`` (default: the whole schema root), forever.

        The watch has a client (a gRPC channel) of its own, so no failing call elsewhere can end
        it.  When the stream has been silent for ``probe_interval`` seconds, one cheap read over
        the same channel checks that the member still answers and still has a leader; a hung or
        leaderless member, an ended stream or a failed probe move the watch to the next endpoint,
        with jittered backoff.  After a reconnect it yields ``resync`` first, then continues
        from the revision after the last event seen.
        """
        prefix = prefix or self.schema.root
        next_rev = start_revision
        backoff = 0.1
        first = True
        index = self._index
        while True:
            client = self._new_client(index, keepalive=True)
            try:
                stream = await within(
                    client.watch_prefix(prefix.encode(), start_revision=next_rev), self.timeout)
                honour_dropped_cancel()  # (aetcd waits for the stream through 3.11's wait_for)
                if not first:
                    yield WatchEvent(kind="resync")
                first = False
                backoff = 0.1
                async for ev in self._events(client, stream):
                    next_rev = ev.revision + 1
                    yield ev
                raise StoreUnavailableError("watch stream ended")
            except asyncio.CancelledError:
                if owner_cancelled():
                    raise
                err: DaprDockrError = StoreUnavailableError("watch cancelled under us")
            except aetcd_exc.RevisionCompactedError:
                log.warning("watch from revision %s compacted; resyncing", next_rev)
                next_rev = None
                first = False
                yield WatchEvent(kind="resync")
                continue
            except Exception as exc:
                err = translate(exc, what="watch")
            finally:
                await self._close_client(client)
            self.errors += 1
            log.warning("etcd watch via %s interrupted (%s); reconnecting in %.1fs", self.endpoints[index], err,
                        backoff)
            first = False
            index = (index + 1) % len(self.endpoints)
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(max_backoff, backoff * 2)

    async def _events(self, client: EtcdClient, stream: Any) -> AsyncIterator[WatchEvent]:
        """The events of one watch stream; probes the member whenever the stream is silent."""
        events = stream.__aiter__()

        async def next_event() -> Any:
            return await events.__anext__()

        pending: asyncio.Future[Any] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(next_event())
                done, _ = await asyncio.wait({pending}, timeout=self.probe_interval)
                if not done:
                    honour_dropped_cancel()  # (one a library dropped elsewhere ends the watch by the next probe)
                    await self._probe(client)
                    continue
                try:
                    ev = pending.result()
                except StopAsyncIteration:
                    return
                pending = None
                kv = ev.kv
                kind: Literal["put", "delete"] = "delete" if str(ev.kind).upper().endswith("DELETE") else "put"
                yield WatchEvent(kind=kind, key=kv.key.decode(errors="replace"), value=kv.value,
                                 revision=int(kv.mod_revision), lease=int(kv.lease),
                                 create_revision=int(kv.create_revision))
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
            try:
                await within(stream.cancel(), 1)
            except Exception:
                log.debug("watch cancel failed", exc_info=True)

    async def _probe(self, client: EtcdClient) -> None:
        """One linearizable read on the watch's own channel; raises if the member cannot serve it."""
        try:
            try:
                await within(client.get(self.schema.root.encode()), min(self.timeout, 1.5))
            except aetcd_exc.ClientError as exc:
                if "invalid auth token" not in str(exc):
                    raise
                await within(client.renew_token(), min(self.timeout, 1.5))  # the stream lives on
                await within(client.get(self.schema.root.encode()), min(self.timeout, 1.5))
        except asyncio.CancelledError:
            if owner_cancelled():
                raise
            raise StoreUnavailableError("watch probe cancelled under us") from None
        except Exception as exc:
            raise translate(exc, what="watch probe") from exc
