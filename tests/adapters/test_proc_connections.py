"""Counting the TCP connections still open to a published port (the drain before a stop), from
the kernel's real socket table: one read for all of a container's ports."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from daprdockr.adapters.procs import established_to

IP = "127.0.0.5"


@contextlib.contextmanager
def listener() -> Iterator[tuple[socket.socket, int]]:
    s = socket.socket()
    s.bind((IP, 0))
    s.listen(64)
    try:
        yield s, s.getsockname()[1]
    finally:
        s.close()


def test_counts_established_connections_to_the_given_ports_only() -> None:
    with listener() as (srv, port), listener() as (_, other):
        clients = [socket.create_connection((IP, port)) for _ in range(3)]
        accepted = [srv.accept()[0] for _ in clients]
        elsewhere = socket.create_connection((IP, other))
        try:
            assert established_to(IP, [port]) == 3
            assert established_to(IP, [port, other]) == 4
            assert established_to("127.0.0.6", [port]) == 0
            for c in clients[:2]:
                c.close()
            for a in accepted[:2]:
                a.close()
            assert established_to(IP, [port]) == 1
        finally:
            for s in [*clients, *accepted, elsewhere]:
                s.close()
