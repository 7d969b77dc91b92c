"""One DNS worker process: ``python -m daprdockr.dnsworker CONFIG_JSON``.

Started by :class:`~daprdockr.dnsserving.workers.DnsWorkerPool`.  It runs a full
:class:`~daprdockr.dnsserver.DnsServer` (uvloop when installed) bound with SO_REUSEPORT
to the agent's DNS address, so the kernel spreads queries over the agent and its workers.

The config (JSON) holds the listen address, upstreams, domain and TTL, and the server's limits
against hostile input (allowed networks, response rate limit, forward and TCP caps, TCP write
timeout: :class:`~daprdockr.core.dns.guard.DnsLimits`), so that every process sharing the address behaves alike.

Protocol with the parent, over the pipes:

* stdin: frames of a 4-byte big-endian length and a pickled
  :class:`~daprdockr.core.dns.delta.ZoneDelta` (the parent's own objects, never network input).
  The first frame (all services) arrives before the worker binds, so it never answers from an
  empty zone; each later one replaces the services that changed.  End of file means the parent
  closed the pipe or died, even by SIGKILL: the worker stops.  So a worker never outlives its agent.
* stdout: ``ready <port>`` once bound; ``{"applied": <revision>}`` for the first state and each
  later one it serves (the agent confirms a removal only once every worker has it); one JSON line
  of cumulative counters about once a second while they change.

A frame that does not unpickle to a ZoneDelta is logged and skipped.  SIGINT is ignored (a
Ctrl-C in a terminal reaches the whole process group; the parent decides); SIGTERM stops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import pickle
import signal
import sys
from typing import Any

from daprdockr.adapters.process import run_until_signal
from daprdockr.core.dns.delta import ZoneDelta, apply_zone_delta
from daprdockr.core.dns.guard import DnsLimits
from daprdockr.core.state import ClusterState
from daprdockr.dnsserver import DnsServer
from daprdockr.dnsserving.workers import FRAME

log = logging.getLogger(__name__)

MAX_FRAME = 256 * 1024 * 1024
STATS_EVERY = 1.0


def stats_line(server: DnsServer) -> str:
    return json.dumps(dataclasses.asdict(server.stats_snapshot()))


def decode_frame(payload: bytes) -> ZoneDelta | None:
    """The delta in one frame, or None (logged) when it is not one."""
    try:
        delta = pickle.loads(payload)
    except Exception as exc:  # any unpickling failure: skip the frame
        log.error("DNS worker: bad state frame (%d bytes): %r", len(payload), exc)
        return None
    if not isinstance(delta, ZoneDelta):
        log.error("DNS worker: frame holds %s, not a ZoneDelta", type(delta).__name__)
        return None
    return delta


async def read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """The next frame's payload; None at end of file (or an oversized frame: out of sync)."""
    try:
        (size,) = FRAME.unpack(await reader.readexactly(FRAME.size))
        if size > MAX_FRAME:
            log.error("DNS worker: frame of %d bytes is too large; stopping", size)
            return None
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        return None


async def feed(server: DnsServer, reader: asyncio.StreamReader, state: ClusterState) -> None:
    """Apply delta frames from ``reader`` to ``state`` until end of file; each new state is acknowledged on
    stdout with its etcd revision (the agent confirms removals only once every worker has it)."""
    while (payload := await read_frame(reader)) is not None:
        delta = decode_frame(payload)
        if delta is not None:
            state = apply_zone_delta(state, delta)
            server.update(state)
            acknowledge(state)


def acknowledge(state: ClusterState) -> None:
    sys.stdout.write(json.dumps({"applied": state.revision}) + "\n")
    sys.stdout.flush()


async def report(server: DnsServer) -> None:
    last = ""
    while True:
        await asyncio.sleep(STATS_EVERY)
        line = stats_line(server)
        if line != last:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            last = line


async def serve(config: dict[str, Any], stop: asyncio.Event) -> int:
    server = DnsServer(
        listen=(str(config["listen"][0]), int(config["listen"][1])),
        upstreams=[(str(h), int(p)) for h, p in config["upstreams"]],
        domain=str(config.get("domain", "container")),
        ttl=int(config.get("ttl", 5)),
        reuse_port=True,
        probe=False,
        limits=DnsLimits.from_config(config),
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    first = await read_frame(reader)  # the state comes before the socket: never answer from nothing
    delta = decode_frame(first) if first is not None else None
    if delta is None:
        log.error("DNS worker: no initial state; exiting")
        return 1
    state = apply_zone_delta(ClusterState(), delta)
    server.update(state)
    await server.start()
    sys.stdout.write(f"ready {server.port}\n")
    sys.stdout.flush()
    acknowledge(state)
    feeding = asyncio.create_task(feed(server, reader, state))
    reporting = asyncio.create_task(report(server))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({feeding, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (feeding, reporting, stopping):
            task.cancel()
        await asyncio.gather(feeding, reporting, stopping, return_exceptions=True)
        await server.stop()
    return 0


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s dns-worker: %(message)s")
    try:
        config = json.loads(argv[1])
    except (IndexError, ValueError) as exc:
        print(f"usage: python -m daprdockr.dnsworker CONFIG_JSON ({exc})", file=sys.stderr)
        return 2
    return run_until_signal(lambda stop: serve(config, stop), signals=(signal.SIGTERM,))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
