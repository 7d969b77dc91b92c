"""The DNS socket's receive buffer: grown to what the server asks, capped by net.core.rmem_max
(and then a warning names the sysctl)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from daprdockr.adapters import sockets
from daprdockr.dnsserver import DnsServer
from daprdockr.dnsserving.listeners import RECEIVE_BUFFER


def test_the_buffer_grows_up_to_rmem_max(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sockets, "_capped_warned", False)
    rmem_max = tmp_path / "rmem_max"
    rmem_max.write_text("262144\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, caplog.at_level(logging.WARNING):
        got = sockets.grow_receive_buffer(sock, want=1 << 20, rmem_max=str(rmem_max))
    assert got == 2 * 262144  # (the kernel reports twice what was set)
    assert "net.core.rmem_max" in caplog.text


async def test_the_dns_server_asks_for_a_deep_queue() -> None:
    limit = int(Path(sockets.RMEM_MAX).read_text())
    server = DnsServer(listen=("127.0.0.1", 0), upstreams=[])
    await server.start()
    try:
        assert server.receive_buffer >= 2 * min(RECEIVE_BUFFER, limit)
    finally:
        await server.stop()
