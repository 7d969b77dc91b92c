"""Counting the TCP connections still open to a published port (the drain before a stop), and
whether a process's network namespace has a listener on a port (an instance is routed once its
program listens), from the kernel's real socket tables: one read for all of a container's ports."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

from daprdockr.adapters.procs import established_to, listening_on

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


def test_a_listener_is_seen_in_the_namespace_of_a_process_and_a_gone_process_is_unknown() -> None:
    with listener() as (_, port):
        assert listening_on(os.getpid(), port) is True
        client = socket.create_connection((IP, port))  # an established socket on it is no listener
        client.close()
    assert listening_on(os.getpid(), port) is False
    v6 = socket.socket(socket.AF_INET6)
    v6.bind(("::1", 0))
    v6.listen(1)
    try:
        assert listening_on(os.getpid(), v6.getsockname()[1]) is True
    finally:
        v6.close()
    assert listening_on(2**22 + 12345, port) is None  # above pid_max: no such process
