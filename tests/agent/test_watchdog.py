"""The watchdog component pings from the agent's own event loop: a blocked loop stops the pings
(a real AF_UNIX datagram socket receives them, on a thread that timestamps each one)."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Iterator

import pytest

from daprdockr.adapters.sdnotify import Notifier
from daprdockr.agent.watchdog import Watchdog
from tests.support.notify import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_pings_stop_while_the_loop_is_blocked_and_resume_after(receiver: Receiver) -> None:
    interval = 0.1
    status = ["serving 0 instances"]
    dog = Watchdog(notifier=Notifier(receiver.name, watchdog=interval), status=lambda: status[0])
    block = (0.0, 0.0)

    async def main() -> None:
        nonlocal block
        await dog.start()
        task = asyncio.create_task(dog.run())
        await asyncio.sleep(0.55)
        status[0] = "serving 2 instances"
        started = time.monotonic()
        time.sleep(1.0)  # the loop is blocked: nothing else runs on it
        block = (started, time.monotonic())
        await asyncio.sleep(0.55)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await dog.stop()

    asyncio.run(main())
    time.sleep(0.1)  # (the receiving thread takes the last datagram)
    pings = receiver.pings()
    before = [t for t in pings if t < block[0]]
    during = [t for t in pings if block[0] + 0.05 < t < block[1]]
    after = [t for t in pings if t >= block[1]]
    assert len(before) >= 2 and len(after) >= 2, pings
    assert during == []
    gaps = [b - a for a, b in itertools.pairwise(before)]
    assert min(gaps) >= 0.08 and statistics.median(gaps) <= 0.3, gaps  # (at the interval: no flood, no long gap)
    # the status goes with the next ping only when it changed
    statuses = [text for _, text in receiver.got if "STATUS=" in text]
    assert statuses == ["WATCHDOG=1\nSTATUS=serving 0 instances", "WATCHDOG=1\nSTATUS=serving 2 instances"]


def test_without_a_watchdog_only_the_status_is_sent(receiver: Receiver) -> None:
    dog = Watchdog(notifier=Notifier(receiver.name, watchdog=None), status=lambda: "serving 1 instances")
    dog.ping_once()
    dog.ping_once()  # (unchanged: nothing to say)
    time.sleep(0.2)
    assert [text for _, text in receiver.got] == ["STATUS=serving 1 instances"]
