"""``daprdockr dns``: the DNS server alone, fed by an etcd watch (no containers, no nginx).

Level-triggered like the agent: every watch event marks the state dirty, and the updater task
swaps the zone from the mirror; bursts of events coalesce into one zone build.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import Any

from daprdockr.adapters.dnsserver import DnsServer
from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.agent.mirror import StateMirror
from daprdockr.core.endpoints import Endpoint, EtcdSecurity
from daprdockr.core.keys import KeySchema

log = logging.getLogger(__name__)


class DnsFeeder:
    """Keeps ``server`` in step with etcd.  :meth:`sync_once` is one iteration of :meth:`run`."""

    def __init__(self, *, store: EtcdStore, server: DnsServer) -> None:
        self.store = store
        self.server = server
        self.mirror = StateMirror(schema=store.schema)

    async def sync_once(self) -> None:
        kvs, revision = await self.store.read_prefix(self.store.schema.root)
        self.mirror.reset(kvs, revision=revision)
        self.server.update(self.mirror.state())

    async def run(self) -> None:
        await self.sync_once()
        async for ev in self.store.watch(start_revision=self.mirror.revision + 1):
            if ev.kind == "resync":
                await self.sync_once()
            elif self.mirror.apply(ev):
                self.server.update(self.mirror.state())


async def serve_dns(
    *, endpoints: Sequence[Endpoint], prefix: str, listen: tuple[str, int],
    upstreams: Sequence[tuple[str, int]] | None, ttl: int, stop: asyncio.Event, security: EtcdSecurity | None = None,
) -> int:
    server = DnsServer(listen=listen, upstreams=upstreams, ttl=ttl)
    async with EtcdStore(endpoints=endpoints, schema=KeySchema(prefix), security=security) as store:
        await server.start()
        feeder = DnsFeeder(store=store, server=server)
        task = asyncio.create_task(feeder.run(), name="dns-feed")
        try:
            await stop.wait()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await server.stop()
    return 0


def run_dns(
    *, endpoints: Sequence[Endpoint], prefix: str, listen: tuple[str, int],
    upstreams: Sequence[tuple[str, int]] | None = None, ttl: int = 5, security: EtcdSecurity | None = None,
) -> int:
    """Serve DNS until SIGTERM/SIGINT; uses uvloop when installed."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await serve_dns(endpoints=endpoints, prefix=prefix, listen=listen, upstreams=upstreams,
                               ttl=ttl, stop=stop, security=security)

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    return int(runner(main()))
