"""Ground-truth probes of a running cluster, the way an operator would look: ``docker ps``,
``dig`` and HTTP requests with a ``Host`` header through an agent's nginx.

The demo service's containers write ``"<instance> <node>"`` to ``/www/id`` (from the
``DAPRDOCKR_INSTANCE``/``DAPRDOCKR_NODE`` variables the agent sets) and serve it with busybox
httpd, so every HTTP answer says which container produced it.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import aiohttp

T = TypeVar("T")

IDENTITY_CMD = [
    "sh", "-c", "echo $DAPRDOCKR_INSTANCE $DAPRDOCKR_NODE > /www/id; exec httpd -f -p 8080 -h /www",
]


@dataclass(frozen=True, slots=True)
class Container:
    node: str
    number: int
    container_id: str


def docker_containers(nodes: list[str], *, service: str, group: str) -> list[Container]:
    """Running containers of ``service.group`` on ``nodes``, from ``docker ps`` labels."""
    out = subprocess.run(
        ["docker", "ps", "--no-trunc", "--filter", f"label=daprdockr.service={service}",
         "--filter", f"label=daprdockr.group={group}", "--format",
         '{{.ID}} {{.Label "daprdockr.node"}} {{.Label "daprdockr.instance"}}'],
        capture_output=True, text=True, check=True,
    ).stdout
    found = []
    for line in out.splitlines():
        cid, node, number = line.split()
        if node in nodes:
            found.append(Container(node=node, number=int(number), container_id=cid))
    return sorted(found, key=lambda c: (c.number, c.node))


def numbers_running(containers: list[Container]) -> Counter[int]:
    """How many containers run each instance number (anything > 1 is a duplicate)."""
    return Counter(c.number for c in containers)


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    status: str  # NOERROR, NXDOMAIN, SERVFAIL, ... or TIMEOUT
    records: tuple[str, ...] = ()  # rdata of the answer section, in order

    @property
    def ok(self) -> bool:
        return self.status == "NOERROR"


def has_records(*records: str) -> Callable[[DnsAnswer], bool]:
    """Predicate: the answer section is exactly ``records`` (in order)."""
    return lambda answer: answer.records == records


_STATUS = re.compile(r"status: ([A-Z]+)")


def dig(server: str, port: int, name: str, rdtype: str = "A") -> DnsAnswer:
    """``dig @server -p port name rdtype`` (one try, 1 s) parsed into status and answer rdata."""
    proc = subprocess.run(
        ["dig", f"@{server}", "-p", str(port), "+time=1", "+tries=1", "+noall", "+comments",
         "+answer", name, rdtype],
        capture_output=True, text=True,
    )
    status = _STATUS.search(proc.stdout)
    if status is None:
        return DnsAnswer(status="TIMEOUT")
    records = []
    for line in proc.stdout.splitlines():
        if line.startswith(";") or not line.strip():
            continue
        parts = line.split()
        if len(parts) >= 5 and parts[3] == rdtype:
            records.append(" ".join(parts[4:]))
    return DnsAnswer(status=status.group(1), records=tuple(records))


@dataclass
class HttpSample:
    """What ``count`` requests through one nginx returned."""

    identities: Counter[str] = field(default_factory=Counter)  # "<n> <node>" -> hits
    statuses: Counter[int] = field(default_factory=Counter)
    first_seen: dict[str, float] = field(default_factory=dict)  # identity -> monotonic time of its first answer

    @property
    def numbers(self) -> set[int]:
        return {int(i.split()[0]) for i in self.identities}


async def http_sample(
    session: aiohttp.ClientSession, *, ip: str, port: int, host: str, count: int, path: str = "/id"
) -> HttpSample:
    """``count`` concurrent GETs of ``http://ip:port/path`` with ``Host: host``."""
    sample = HttpSample()

    async def one() -> None:
        try:
            async with session.get(
                f"http://{ip}:{port}{path}", headers={"Host": host},
                timeout=aiohttp.ClientTimeout(total=3),
            ) as resp:
                body = (await resp.text()).strip()
                sample.statuses[resp.status] += 1
                if resp.status == 200 and body:
                    sample.identities[body] += 1
                    sample.first_seen.setdefault(body, time.monotonic())
        except (aiohttp.ClientError, TimeoutError):
            sample.statuses[0] += 1

    await asyncio.gather(*(one() for _ in range(count)))
    return sample


async def eventually(probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], *, timeout: float) -> T:
    """Re-run ``probe`` until ``ok(result)`` or ``timeout``; returns the last result either way,
    so the caller asserts on what was really observed."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if ok(result) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.25)


async def dig_until(
    server: str, port: int, name: str, ok: Callable[[DnsAnswer], bool], *, rdtype: str = "A",
    timeout: float = 10.0,
) -> DnsAnswer:
    """:func:`dig` repeated (in a thread) until ``ok(answer)`` or ``timeout``."""
    return await eventually(lambda: asyncio.to_thread(dig, server, port, name, rdtype), ok, timeout=timeout)


async def routed_identities(
    session: aiohttp.ClientSession, *, ip: str, port: int, host: str, want: set[str], timeout: float,
    batch: int = 24,
) -> set[str]:
    """Identities answering through one nginx, sampled in batches until exactly ``want`` was
    seen (or ``timeout``).  Seen sets restart whenever something outside ``want`` answers, so the
    result is what nginx routes to now, not a history."""
    seen: set[str] = set()

    async def probe() -> set[str]:
        sample = await http_sample(session, ip=ip, port=port, host=host, count=batch)
        got = set(sample.identities)
        if not got <= want:
            seen.clear()
            return got
        seen.update(got)
        return set(seen)

    return await eventually(probe, lambda s: s == want, timeout=timeout)


@dataclass
class HttpLoad:
    """Steady HTTP load through several nginx (``targets``), counted two ways.

    Each of ``workers`` clients sends one GET at a time, taking the targets in turn.  A request
    that fails (connection error, timeout, any status but 2xx: a 404 means the route was lost)
    counts in ``first_try_failures``: what a client
    that never retries would have seen.  The client then retries on the next target, with a
    short growing pause, for up to ``retry_budget`` seconds, as an idempotent GET may be; only a
    request that still fails after that counts in ``failed``.
    """

    targets: list[tuple[str, int]]
    host: str
    workers: int = 2
    retry_budget: float = 10.0
    path: str = "/id"
    requests: int = 0
    first_try_failures: int = 0
    retries: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)  # the last few errors, for the report

    async def _once(self, session: aiohttp.ClientSession, target: tuple[str, int]) -> str:
        """"" when the request succeeded, else what went wrong."""
        ip, port = target
        try:
            async with session.get(f"http://{ip}:{port}{self.path}", headers={"Host": self.host},
                                   timeout=aiohttp.ClientTimeout(total=3)) as resp:
                await resp.read()
                return "" if 200 <= resp.status < 300 else f"HTTP {resp.status} from {ip}:{port}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__} from {ip}:{port}"

    async def _worker(self, session: aiohttp.ClientSession, stop: asyncio.Event, offset: int) -> None:
        turn = offset
        while not stop.is_set():
            self.requests += 1
            turn += 1
            error = await self._once(session, self.targets[turn % len(self.targets)])
            if not error:
                continue
            self.first_try_failures += 1
            deadline = time.monotonic() + self.retry_budget
            pause = 0.05
            while error and time.monotonic() < deadline:
                await asyncio.sleep(pause)
                pause = min(0.5, pause * 2)
                turn += 1
                self.retries += 1
                error = await self._once(session, self.targets[turn % len(self.targets)])
            if error:
                self.failed += 1
                self.failures = [*self.failures[-9:], error]

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set."""
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self._worker(session, stop, i) for i in range(self.workers)))

    def summary(self) -> str:
        return (f"{self.requests} requests: {self.first_try_failures} failed on the first try (a client "
                f"without retries), {self.failed} failed after retries ({self.retries} retries)")
