"""``daprdockr dns``: the DNS server alone, fed by the informer (no containers, no nginx).

Level-triggered like the agent: the informer (list, watch, resync) calls back on every change,
and the server's zone is rebuilt lazily from the newest state on the next query that needs it,
so bursts of events cost one zone build.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.informer import Informer
from daprdockr.adapters.process import run_until_signal
from daprdockr.core.dnsguard import LOOPBACK, Network
from daprdockr.core.endpoints import Endpoint, EtcdSecurity
from daprdockr.core.keys import KeySchema
from daprdockr.dnsserver import DnsServer

log = logging.getLogger(__name__)


async def serve_dns(
    *, endpoints: Sequence[Endpoint], prefix: str, listen: tuple[str, int],
    upstreams: Sequence[tuple[str, int]] | None, ttl: int, stop: asyncio.Event, security: EtcdSecurity | None = None,
    allow: Sequence[Network] = (),
) -> int:
    server = DnsServer(listen=listen, upstreams=upstreams, ttl=ttl, allow=(*LOOPBACK, *allow))
    async with EtcdStore(endpoints=endpoints, schema=KeySchema(prefix), security=security) as store:
        informer = Informer(store=store, on_change=lambda: server.update(informer.state))
        await informer.list_once()
        await server.start()
        task = asyncio.create_task(informer.run(), name="dns-feed")
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
    allow: Sequence[Network] = (),
) -> int:
    """Serve DNS until SIGTERM/SIGINT; uses uvloop when installed."""
    return run_until_signal(lambda stop: serve_dns(endpoints=endpoints, prefix=prefix, listen=listen,
                                                   upstreams=upstreams, ttl=ttl, stop=stop, security=security,
                                                   allow=allow))
