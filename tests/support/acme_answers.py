"""A stand-in for the agents' nginx in ACME tests that run without it: an HTTP server answering
``/.well-known/acme-challenge/<token>`` from the challenge records in etcd (``<prefix>-tls/``),
kept by a read plus a watch as the agents' TLS watch does."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from daprdockr.adapters.tls_store import TlsStore
from daprdockr.core.tls_state import TlsState, apply_event


@dataclass
class EtcdAnswers:
    state: TlsState = field(default_factory=TlsState)
    fetched: list[str] = field(default_factory=list)  # tokens asked for, answered or not


def _handler(answers: EtcdAnswers) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            prefix = "/.well-known/acme-challenge/"
            token = self.path[len(prefix):] if self.path.startswith(prefix) else ""
            answers.fetched.append(token)
            value = answers.state.challenges.get(token) if token else None
            self.send_response(200 if value is not None else 404)
            self.end_headers()
            if value is not None:
                self.wfile.write(value.encode())

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextlib.asynccontextmanager
async def etcd_answers(tls: TlsStore, *, listen: tuple[str, int]) -> AsyncIterator[EtcdAnswers]:
    answers = EtcdAnswers()
    answers.state, revision = await tls.read()

    async def follow() -> None:
        nonlocal revision
        while True:
            async for event in tls.watch(revision + 1):
                if event.kind == "resync":
                    answers.state, revision = await tls.read()
                    break
                answers.state = apply_event(answers.state, tls.schema, event)
                revision = max(revision, event.revision)

    server = http.server.ThreadingHTTPServer(listen, _handler(answers))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    watcher = asyncio.create_task(follow())
    try:
        yield answers
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
        server.shutdown()
        server.server_close()
