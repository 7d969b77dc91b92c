"""The sd_notify adapter against real AF_UNIX datagram sockets (by path and abstract)."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daprdockr.adapters.sdnotify import Notifier, socket_address, watchdog_interval


@pytest.fixture
def path_socket() -> Iterator[tuple[str, socket.socket]]:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:  # (short: AF_UNIX paths end at 108 bytes)
        path = str(Path(tmp) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(2)
            yield path, sock


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    name = f"@daprdockr-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(socket_address(name))
        sock.settimeout(2)
        yield name, sock


@pytest.mark.parametrize("which", ["path_socket", "abstract_socket"])
def test_lines_arrive_as_one_datagram(which: str, request: pytest.FixtureRequest) -> None:
    address, sock = request.getfixturevalue(which)
    notifier = Notifier(address)
    assert notifier.notify("READY=1", "STATUS=serving 3 instances")
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving 3 instances"
    assert notifier.notify("STOPPING=1") and sock.recv(4096) == b"STOPPING=1"
    notifier.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    env: dict[str, str] = {}
    notifier = Notifier.from_env(env)
    assert not notifier.enabled and notifier.watchdog is None
    assert notifier.notify("READY=1") is False and notifier.sent == 0


def test_from_env_takes_and_removes_the_variables(abstract_socket: tuple[str, socket.socket]) -> None:
    address, sock = abstract_socket
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid()), "OTHER": "x"}
    notifier = Notifier.from_env(env)
    assert env == {"OTHER": "x"}  # (the agent's children do not inherit them)
    assert notifier.watchdog == 1.5
    notifier.notify("WATCHDOG=1")
    assert sock.recv(64) == b"WATCHDOG=1"


@pytest.mark.parametrize(("env", "interval"), [
    ({"WATCHDOG_USEC": "400000"}, 0.2),
    ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "4242"}, 0.2),  # this process (pid 4242)
    ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "4243"}, None),  # another process's watchdog
    ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "x"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    assert watchdog_interval(env, pid=4242) == interval


def test_a_socket_gone_is_logged_once_never_raised(path_socket: tuple[str, socket.socket],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="daprdockr.adapters.sdnotify")  # (CLI tests raise the root level)
    address, _sock = path_socket
    os.unlink(address)
    notifier = Notifier(address)
    assert notifier.notify("READY=1") is False and notifier.notify("WATCHDOG=1") is False
    assert len([r for r in caplog.records if "notify socket" in r.getMessage()]) == 1
