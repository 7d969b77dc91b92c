"""DNS worker processes that share the agent's DNS address through SO_REUSEPORT.

One Python process answers a bounded rate of queries (BENCHMARKS.md, "DNS: DaprDockr vs
dnsmasq"); almost all of that time is the per-datagram cost of the event loop and the socket
calls, not the lookup.  So the agent's own
:class:`~daprdockr.dnsserver.DnsServer` binds its address with SO_REUSEPORT and
:class:`DnsWorkerPool` starts ``count`` more full servers
(:mod:`daprdockr.dnsworker`, started by module name) on the same address; the kernel spreads clients over
all of them.

* State: :meth:`DnsWorkerPool.update` only keeps the newest :class:`ClusterState`; one writer
  task per worker sends it what changed since the state it sent that worker last (a pickled
  :class:`~daprdockr.core.dns.delta.ZoneDelta` of the changed services, length-prefixed; all
  services to a new worker) ``coalesce`` seconds (20 ms) after the first change, so a burst of
  changes (a scale-up: hundreds of watch events) costs a few small frames, not one whole state
  per event, and a slow worker never blocks the agent.  Workers build their
  zone lazily, like the agent's own server, so they trail it by about those 20 ms.
* Lifetime: a worker exits when its stdin reaches end of file, so it dies with the agent even on
  SIGKILL.  :meth:`supervise_once` restarts a worker that exited after the delay chosen by the
  pure :class:`~daprdockr.core.restart_policy.RestartPolicy` (as for nginx), and sends it the
  newest state; :meth:`run` is that, forever.  :meth:`stop` closes the pipes, waits, then
  kills: time-limited, never raises.
* Limits: the pool takes the same limits against hostile input as
  :class:`~daprdockr.dnsserver.DnsServer` (:class:`~daprdockr.core.dns.guard.DnsLimits`) and passes
  them to every worker, so all processes on the
  address answer alike.  Forward and TCP caps hold per process (with ``count`` workers the
  address as a whole allows ``count + 1`` times as many); the response rate limit is one budget
  for the address, because the agent gives every process its share
  (:meth:`~daprdockr.core.dns.guard.RrlPolicy.shared_by`) and the queries are spread at random.
* Acknowledgements: a worker prints ``{"applied": <revision>}`` as soon as it serves a new state;
  :attr:`DnsWorkerPool.applied_revision` is the oldest of them, acknowledged to confirmed removal
  (``acks``, router ``dns-workers``) whenever it changes, so the agent confirms a removal only once
  every process on its DNS address answers without the removed instance.
* Counters: each worker prints its cumulative counters as a JSON line about once a second;
  :meth:`stats_total` adds them up (keeping the last counts of workers that exited), so the
  agent's metrics cover every process that answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pickle
import random
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from daprdockr.cancellation import within
from daprdockr.core.backoff import Backoff
from daprdockr.core.dns.delta import zone_delta
from daprdockr.core.dns.guard import DEFAULT_LIMITS, DnsLimits
from daprdockr.core.dns.stats import DnsStats
from daprdockr.core.dns.wire import Address
from daprdockr.core.removal_tracker import Acknowledgements
from daprdockr.core.restart_policy import RestartPolicy, RestartState
from daprdockr.core.state import ClusterState
from daprdockr.errors import DaprDockrError

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0
WORKER_MODULE = "daprdockr.dnsworker"  # run by name: this pool never imports the responder
ROUTER = "dns-workers"  # their name to confirmed removal
FRAME = struct.Struct("!I")  # state frames on a worker's stdin: 4-byte big-endian length, then a pickle


@dataclass(slots=True)
class _Worker:
    slot: int
    proc: asyncio.subprocess.Process
    started_at: float
    sent_version: int = -1
    sent_state: ClusterState | None = None  # the state it was sent last (None: send all)
    applied: int = 0  # the etcd revision of the newest state the worker acknowledged
    stats: DnsStats = field(default_factory=DnsStats)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


def _parse_stats(line: bytes) -> DnsStats | None:
    try:
        data = json.loads(line)
        return DnsStats(
            queries=int(data["queries"]), cache_hits=int(data["cache_hits"]), forwarded=int(data["forwarded"]),
            dropped=int(data["dropped"]), limited=int(data.get("limited", 0)),
            answers={str(k): int(v) for k, v in data["answers"].items()},
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class DnsWorkerPool:
    def __init__(
        self,
        *,
        listen: Address,
        upstreams: Sequence[Address],
        domain: str = "container",
        ttl: int = 5,
        count: int,
        python: str = sys.executable,
        restart_policy: RestartPolicy | None = None,
        coalesce: float = 0.02,
        limits: DnsLimits = DEFAULT_LIMITS,
        acks: Acknowledgements | None = None,
    ) -> None:
        self.listen = listen
        self.upstreams = list(upstreams)
        self.domain = domain
        self.ttl = ttl
        self.limits = limits
        self.count = count
        self.python = python
        self.policy = restart_policy or RestartPolicy(backoff=Backoff(base=0.5, max_delay=30.0), stable_after=30.0)
        self.coalesce = coalesce
        self.acks = acks
        self.restarts = 0
        self._workers: dict[int, _Worker] = {}
        self._restart: dict[int, RestartState] = {}
        self._not_before: dict[int, float] = {}
        self._retired = DnsStats()
        self._state = ClusterState()
        self._version = 0

    @property
    def alive(self) -> int:
        return sum(1 for w in self._workers.values() if w.proc.returncode is None)

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers.values() if w.proc.returncode is None]

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start every worker; DaprDockrError if one cannot bind or does not come up."""
        try:
            for slot in range(self.count):
                self._workers[slot] = await self._spawn(slot)
                self._acknowledge()
        except DaprDockrError:
            await self.stop()
            raise

    async def _spawn(self, slot: int) -> _Worker:
        self._restart[slot] = self.policy.on_start(self._restart.get(slot, RestartState()), now=time.monotonic())
        config = json.dumps({
            "listen": list(self.listen), "upstreams": [list(u) for u in self.upstreams],
            "domain": self.domain, "ttl": self.ttl, **self.limits.to_config(),
        })
        try:
            proc = await asyncio.create_subprocess_exec(
                self.python, "-m", WORKER_MODULE, config,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise DaprDockrError(f"cannot start a DNS worker: {exc}", transient=True) from exc
        assert proc.stdout is not None and proc.stdin is not None
        version, state = self._version, self._state
        payload = pickle.dumps(zone_delta(None, state), protocol=5)
        try:
            proc.stdin.write(FRAME.pack(len(payload)) + payload)  # state first, then it binds
            await within(proc.stdin.drain(), START_TIMEOUT)
            line = await within(proc.stdout.readline(), START_TIMEOUT)
        except (TimeoutError, ConnectionError):
            line = b""
        if not line.startswith(b"ready "):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise DaprDockrError(
                f"DNS worker {slot} did not start on {self.listen[0]}:{self.listen[1]} (exit {proc.returncode})",
                transient=True,
            )
        worker = _Worker(slot=slot, proc=proc, started_at=time.monotonic(), sent_version=version, sent_state=state)
        worker.tasks = [
            asyncio.create_task(self._write(worker), name=f"dns-worker-{slot}-feed"),
            asyncio.create_task(self._read(worker), name=f"dns-worker-{slot}-stats"),
        ]
        worker.wake.set()  # in case the state changed while it started
        log.info("DNS worker %d up (pid %d)", slot, proc.pid)
        return worker

    async def stop(self, *, grace: float = 2.0) -> None:
        workers = list(self._workers.values())
        self._workers.clear()
        self._acknowledge()
        for w in workers:
            for task in w.tasks:
                task.cancel()  # no more writes; _retire collects them
            if w.proc.stdin is not None:
                w.proc.stdin.close()
        for w in workers:
            try:
                await within(w.proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                with contextlib.suppress(TimeoutError):
                    await within(w.proc.wait(), grace)
            await self._retire(w)

    async def _retire(self, worker: _Worker) -> None:
        """End a gone worker's pipe tasks and keep its last counters in the totals."""
        for task in worker.tasks:
            task.cancel()
        await asyncio.gather(*worker.tasks, return_exceptions=True)
        self._retired.add(worker.stats)

    # ------------------------------------------------------------------ state and counters
    def update(self, state: ClusterState) -> None:
        """Make ``state`` the newest; each worker's writer sends it what changed when it can."""
        self._state = state
        self._version += 1
        for w in self._workers.values():
            w.wake.set()

    def _payload_for(self, worker: _Worker) -> bytes:  # (the newest state: never None after a start)
        """What changed for ``worker`` since the state it was sent last (all of it the first time)."""
        delta = zone_delta(worker.sent_state, self._state)
        worker.sent_state = self._state
        return pickle.dumps(delta, protocol=5)

    async def _write(self, worker: _Worker) -> None:
        stdin = worker.proc.stdin
        assert stdin is not None
        try:
            while True:
                await worker.wake.wait()
                await asyncio.sleep(self.coalesce)
                worker.wake.clear()
                version = self._version
                if version == worker.sent_version:
                    continue
                payload = self._payload_for(worker)
                stdin.write(FRAME.pack(len(payload)) + payload)
                await stdin.drain()
                worker.sent_version = version
        except (ConnectionError, BrokenPipeError):
            return  # the worker is gone; supervise_once restarts it

    async def _read(self, worker: _Worker) -> None:
        stdout = worker.proc.stdout
        assert stdout is not None
        while line := await stdout.readline():
            if line.startswith(b'{"applied": '):
                with contextlib.suppress(ValueError):
                    worker.applied = int(line[12:].rstrip(b"}\n"))
                    self._acknowledge()
                continue
            stats = _parse_stats(line)
            if stats is not None:
                worker.stats = stats
        await worker.proc.wait()  # (it exited: it counts no more)
        self._acknowledge()

    @property
    def applied_revision(self) -> int | None:
        """The oldest etcd revision every live worker acknowledged serving (None: no worker)."""
        live = [w.applied for w in self._workers.values() if w.proc.returncode is None]
        return min(live) if live else None

    def _acknowledge(self) -> None:
        if self.acks is not None:
            self.acks.acknowledge(ROUTER, self.applied_revision)

    def stats_total(self) -> DnsStats:
        total = DnsStats()
        total.add(self._retired)
        for w in self._workers.values():
            total.add(w.stats)
        return total

    # ------------------------------------------------------------------ supervision
    async def supervise_once(self) -> None:
        """Restart every worker that exited (after the restart policy's delay per slot)."""
        now = time.monotonic()
        for slot in range(self.count):
            w = self._workers.get(slot)
            if w is not None and w.proc.returncode is None:
                continue
            if w is not None:
                log.warning("DNS worker %d (pid %d) exited with code %s", slot, w.proc.pid, w.proc.returncode)
                del self._workers[slot]
                self._acknowledge()
                await self._retire(w)
                self._back_off(slot, now=now)
            if now < self._not_before.get(slot, 0.0):
                continue
            try:
                self._workers[slot] = await self._spawn(slot)
                self._acknowledge()
                self.restarts += 1
            except DaprDockrError as exc:
                log.error("%s; retrying in %.1fs", exc, self._back_off(slot, now=time.monotonic()))

    def _back_off(self, slot: int, *, now: float) -> float:
        """Record an exit (or a failed start) of ``slot``; returns the delay before the next start."""
        self._restart[slot], delay = self.policy.on_exit(self._restart[slot], now=now, rand=random.random())
        self._not_before[slot] = now + delay
        return delay

    async def run(self, *, interval: float = 0.5) -> None:
        while True:
            await self.supervise_once()
            await asyncio.sleep(interval)
