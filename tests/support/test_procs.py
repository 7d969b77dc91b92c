"""The test harness's own port picking and waiting (CI once lost a run to a taken etcd port)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.procs import free_port, wait_port


def _ephemeral_start() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_handed_out_ports_are_never_ones_the_kernel_gives_to_outgoing_connections() -> None:
    ports = [free_port() for _ in range(200)]
    assert max(ports) < _ephemeral_start()
    assert len(set(ports)) == len(ports), "a port was handed out twice"


def test_a_port_free_for_udp_too_is_free_for_both() -> None:
    port = free_port("127.0.0.1", udp=True)
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", port))


def test_waiting_for_a_process_that_died_fails_at_once_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "m0.log"
    log.write_text("listen tcp 127.0.0.1:1: bind: address already in use\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    proc.wait()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="address already in use"):
        wait_port("127.0.0.1", free_port(), timeout=15, proc=proc, log=log)
    assert time.monotonic() - started < 5
