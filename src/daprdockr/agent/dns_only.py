"""``daprdockr dns``: the DNS server alone, fed by the informer (no containers, no nginx).

Level-triggered like the agent: the informer (list, watch, resync) publishes every change and
the agent's fanout (:mod:`.fanout`) gives the server the new state only when a service or
instance key changed (the mirror's routing version); the server rebuilds its zone lazily on
the next query that needs it, so bursts of events cost one zone build and node or ``applied``
writes cost none.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.informer import Informer
from daprdockr.adapters.process import run_until_signal
from daprdockr.adapters.sockets import host_networks
from daprdockr.agent.changes import Changes
from daprdockr.agent.fanout import RoutingFanout
from daprdockr.core.dns.guard import DnsLimits, Network, allowed_networks
from daprdockr.core.endpoints import Endpoint, EtcdSecurity
from daprdockr.core.keys import KeySchema
from daprdockr.dnsserver import DnsServer

log = logging.getLogger(__name__)


async def serve_dns(
    *, endpoints: Sequence[Endpoint], prefix: str, listen: tuple[str, int],
    upstreams: Sequence[tuple[str, int]] | None, ttl: int, stop: asyncio.Event, security: EtcdSecurity | None = None,
    allow: Sequence[Network] = (),
) -> int:
    limits = DnsLimits(allow=allowed_networks(allow, host=host_networks()))  # (--dns-allow adds, as in the agent)
    server = DnsServer(listen=listen, upstreams=upstreams, ttl=ttl, limits=limits, priority_socket=True)
    changes = Changes()
    async with EtcdStore(endpoints=endpoints, schema=KeySchema(prefix), security=security) as store:
        informer = Informer(store=store, on_change=changes.etcd_changed)
        fanout = RoutingFanout(mirror=informer.mirror, changes=changes)
        fanout.receivers.append(server)
        await informer.list_once()
        fanout.fanout_once()  # (the server starts with the state)
        await server.start()
        server.spread_queries(members=1)  # (allowed clients to a socket of their own)
        tasks = [asyncio.create_task(informer.run(), name="dns-feed"), asyncio.create_task(fanout.run(), name="fanout")]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
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
