"""The merged log of a service: ``GET /v1/logs/<group>/<service>?tail=100&follow=1``.

Text, one line per log line, ``[<n>] <line>`` (``n``: the instance number), from every instance
of the service in this agent's state, interleaved as they arrive: this node's containers read
from its runtime (:class:`~daprdockr.agent.view.LogSource`, as ``/v1/logs/<g>/<s>/<n>``), another
node's from that node's API (``/v1/logs/<g>/<s>/<n>``, with this agent's token).  An instance
whose source fails shows one ``[n] [daprdockr: ...]`` line; the others go on.  At most
:data:`MAX_INSTANCES` instances per request (the lowest numbers; a first line says so), at most
:data:`MAX_STREAMS` merged streams at once (429 beyond), lines pass through a bounded queue (a
slow reader slows the sources, never grows memory).  With ``follow`` the stream picks up
instances that start meanwhile (checked every second) and ends when the client goes.

Access follows the API's rule: open when the API listens on loopback, else the Bearer token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from daprdockr.agent.access import bearer_ok
from daprdockr.agent.peer_api import PeerApi, api_address
from daprdockr.agent.view import LogSource
from daprdockr.cancellation import within
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from daprdockr.core.state import ClusterState
from daprdockr.errors import DaprDockrError, ValidationError

log = logging.getLogger(__name__)

MAX_INSTANCES = 64
MAX_STREAMS = 8
QUEUE_LINES = 256
LINE_LIMIT = 64 * 1024  # a longer line is cut into parts of this size
RESCAN = 1.0  # seconds between looks for new instances while following


def split_lines(pending: str, chunk: str) -> tuple[list[str], str]:
    """Complete lines (each ending in a newline) of ``pending + chunk``, and the rest; a rest
    longer than :data:`LINE_LIMIT` is cut off as a line of its own."""
    text = pending + chunk
    *lines, rest = text.split("\n")
    out = [f"{line}\n" for line in lines]
    while len(rest) > LINE_LIMIT:
        out.append(f"{rest[:LINE_LIMIT]}\n")
        rest = rest[LINE_LIMIT:]
    return out, rest


@dataclass(frozen=True, slots=True)
class Request:
    service: ServiceName
    tail: int
    follow: bool
    number: int | None = None  # ``?instance=N``: only that instance (one log from whichever node runs it)


class MergedStream:
    """One merged log request: a task per instance feeding one bounded queue."""

    def __init__(self, *, node_id: str, logs: LogSource, peers: PeerApi, request: Request) -> None:
        self.node_id = node_id
        self.logs = logs
        self.peers = peers
        self.request = request
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_LINES)
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.sources: dict[int, tuple[str, str]] = {}  # number -> (node, container id) it was started for

    def _chunks(self, rec: InstanceRecord, state: ClusterState, *, tail: int) -> AsyncIterator[str]:
        r = self.request
        if rec.node == self.node_id:
            return self._local(rec.number, tail=tail)
        owner = state.nodes.get(rec.node)
        if owner is None or not owner.api:
            raise DaprDockrError(f"node {rec.node} runs it but publishes no API address")
        path = f"/v1/logs/{r.service.group}/{r.service.service}/{rec.number}"
        return self.peers.stream(api_address(owner), path, follow=r.follow,
                                 params={"tail": str(tail), "follow": "1" if r.follow else "0"})

    async def _local(self, number: int, *, tail: int) -> AsyncIterator[str]:
        container = await self.logs.find_instance(service=self.request.service, number=number)
        if container is None:
            raise DaprDockrError(f"no container on node {self.node_id}")
        async for chunk in self.logs.logs(container.id, tail=tail, follow=self.request.follow):
            yield chunk

    async def _pump(self, rec: InstanceRecord, state: ClusterState, *, tail: int) -> None:
        prefix, pending = f"[{rec.number}] ", ""
        try:
            async for chunk in self._chunks(rec, state, tail=tail):
                lines, pending = split_lines(pending, chunk)
                for line in lines:
                    await self.queue.put(f"{prefix}{line}".encode())
            if pending:
                await self.queue.put(f"{prefix}{pending}\n".encode())
        except DaprDockrError as exc:
            await self.queue.put(f"{prefix}[daprdockr: {exc}]\n".encode())

    def scan(self, state: ClusterState) -> str:
        """Start a stream for each instance not streamed yet, or whose node or container changed
        since its stream ended (following); returns a note when instances were left out."""
        records = [r for r in state.instances_of(self.request.service)
                   if self.request.number is None or r.number == self.request.number]
        for rec in records[:MAX_INSTANCES]:
            source = (rec.node, rec.container_id)
            task = self.tasks.get(rec.number)
            if task is not None and (not task.done() or self.sources[rec.number] == source):
                continue
            tail = self.request.tail if task is None or self.sources[rec.number][1] != rec.container_id else 0
            self.sources[rec.number] = source
            self.tasks[rec.number] = asyncio.create_task(self._pump(rec, state, tail=tail),
                                                         name=f"logs {self.request.service}/{rec.number}")
        if len(records) > MAX_INSTANCES:
            return f"[daprdockr: showing instances {records[0].number}..{records[MAX_INSTANCES - 1].number}, " \
                   f"{MAX_INSTANCES} of {len(records)}]\n"
        return ""

    def finished(self) -> bool:
        return all(t.done() for t in self.tasks.values()) and self.queue.empty()

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


class ServiceLogs:
    """The merged-log endpoint of one agent."""

    def __init__(self, *, node_id: str, state: Callable[[], ClusterState], logs: LogSource, peers: PeerApi,
                 read_token: str) -> None:
        self.node_id = node_id
        self.state = state
        self.logs = logs
        self.peers = peers
        self.read_token = read_token  # "": open (the API listens on loopback)
        self.streams = 0
        self.closing = False

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/logs/{group}/{service}", self.merged)
        app.on_shutdown.append(self._shutdown)

    async def _shutdown(self, app: web.Application) -> None:
        self.closing = True  # every open stream ends within a second

    async def merged(self, request: web.Request) -> web.StreamResponse:
        if self.read_token and not bearer_ok(request, self.read_token):
            return web.json_response({"error": "this endpoint needs Authorization: Bearer <token>"}, status=401)
        try:
            name = ServiceName.parse(f"{request.match_info['service']}.{request.match_info['group']}")
            tail = max(0, min(100_000, int(request.query.get("tail", "100"))))
            number = int(request.query["instance"]) if "instance" in request.query else None
        except (ValidationError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        state = self.state()
        if name not in state.services and not state.instances_of(name):
            return web.json_response({"error": f"service {name} not found"}, status=404)
        if self.streams >= MAX_STREAMS:
            return web.json_response({"error": f"{self.streams} merged log streams are open, at most "
                                               f"{MAX_STREAMS}"}, status=429)
        follow = request.query.get("follow", "0") in ("1", "true")
        self.streams += 1
        stream = MergedStream(node_id=self.node_id, logs=self.logs, peers=self.peers,
                              request=Request(service=name, tail=tail, follow=follow, number=number))
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
            await resp.prepare(request)
            with contextlib.suppress(ConnectionResetError):
                note = stream.scan(state)
                if note:
                    await resp.write(note.encode())
                await self._copy(stream, resp, request, follow=follow)
            return resp
        finally:
            self.streams -= 1
            await stream.close()

    async def _copy(self, stream: MergedStream, resp: web.StreamResponse, request: web.Request, *,
                    follow: bool) -> None:
        """Queue to response until every source ended (not following), the client went (seen
        within a second, also when no line comes) or the API shuts down."""
        loop = asyncio.get_running_loop()
        next_scan = loop.time() + RESCAN
        while (follow or not stream.finished()) and not self.closing:
            if request.transport is None or request.transport.is_closing():
                return
            try:
                line = await within(stream.queue.get(), max(0.0, next_scan - loop.time()))
            except TimeoutError:
                line = b""
            if line:
                await resp.write(line)
            if follow and loop.time() >= next_scan:
                stream.scan(self.state())
                next_scan = loop.time() + RESCAN
