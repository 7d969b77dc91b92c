"""The reuseport steering program against real sockets on loopback: datagrams from the allowed
networks reach the priority socket alone, every other one a random other member."""

from __future__ import annotations

import socket
import time
from collections import Counter
from ipaddress import IPv4Network

import pytest

from daprdockr.adapters.sockets import MAX_STEERED, attach_program, steering_program


def group(members: int) -> list[socket.socket]:
    socks: list[socket.socket] = []
    for _ in range(members):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", socks[0].getsockname()[1] if socks else 0))
        s.setblocking(False)
        socks.append(s)
    return socks


@pytest.mark.parametrize(("members", "priority"), [(2, 1), (3, 1), (4, 1), (3, 0), (3, 2)])
def test_allowed_sources_reach_the_priority_socket_alone(members: int, priority: int) -> None:
    socks = group(members)
    try:
        nets = [IPv4Network("127.0.0.50/32"), IPv4Network("10.0.0.0/8"), IPv4Network("127.0.1.0/24")]
        attach_program(socks[0], steering_program(members=members, priority=priority, networks=nets))
        port = socks[0].getsockname()[1]
        for src in ("127.0.0.50", "127.0.1.9", "127.0.0.60", "127.0.2.1"):
            for _ in range(60):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                    c.bind((src, 0))
                    c.sendto(b"x", ("127.0.0.1", port))
        time.sleep(0.2)
        got: Counter[tuple[int, str]] = Counter()
        for i, s in enumerate(socks):
            while True:
                try:
                    _, addr = s.recvfrom(16)
                except BlockingIOError:
                    break
                got[(i, addr[0])] += 1
        assert got[(priority, "127.0.0.50")] == got[(priority, "127.0.1.9")] == 60
        others = {i for i, src in got if src in ("127.0.0.60", "127.0.2.1")}
        assert priority not in others and len(others) == members - 1  # (random: each other member gets some)
        assert sum(n for (_, src), n in got.items() if src in ("127.0.0.60", "127.0.2.1")) == 120
    finally:
        for s in socks:
            s.close()


def test_too_many_networks_are_refused() -> None:
    nets = [IPv4Network(f"10.{i}.0.0/16") for i in range(MAX_STEERED + 1)]
    with pytest.raises(ValueError):
        steering_program(members=2, priority=1, networks=nets)
