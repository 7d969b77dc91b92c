"""A task asked to stop stops, even when the call it awaits completes in the same loop iteration.

Found in CI: ``daprdockrd`` did not exit within 40 s of SIGTERM.  The ordered shutdown cancels the
acting tasks and waits for them; on Python 3.11 ``asyncio.wait_for`` drops the cancellation of a
task whose awaited call completes just then (CPython gh-86296), so such a loop ran on and the
shutdown waited forever.  Every bounded await in the project goes through
:func:`daprdockr.cancellation.within` (ruff bans ``asyncio.wait_for`` in ``src``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.cancellation import stop_tasks, within

Bounded = Callable[[Awaitable[bool], float], Awaitable[bool]]


async def _loop_survives_cancel(bounded: Bounded, steps: int) -> bool:
    """A loop awaiting an event through ``bounded`` is cancelled ``steps`` loop iterations after
    the event was set; True if it went on running."""
    ready = asyncio.Event()

    async def loop() -> None:
        while True:
            await bounded(ready.wait(), 10)
            ready.clear()
            await asyncio.sleep(0.01)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    ready.set()
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.5)
    survived = not done
    task.cancel()
    await asyncio.wait({task}, timeout=0.5)
    return survived


@pytest.mark.parametrize("steps", range(6))
async def test_within_never_drops_the_callers_cancellation(steps: int) -> None:
    assert not await _loop_survives_cancel(within, steps)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for is built on asyncio.timeout since 3.12")
async def test_the_3_11_wait_for_drops_it_which_is_why_within_exists() -> None:
    def wait_for(aw: Awaitable[bool], seconds: float) -> Awaitable[bool]:
        return asyncio.wait_for(aw, seconds)

    survived = [await _loop_survives_cancel(wait_for, steps) for steps in range(6)]
    assert any(survived), survived


async def test_a_loop_of_etcd_calls_always_ends_when_cancelled(store: EtcdStore) -> None:
    """The shape of the agent's heartbeat: etcd calls in a loop, cancelled at every moment of a
    call's life; each time the task ends."""
    for delay in [i * 0.0002 for i in range(60)]:
        async def calls() -> None:
            while True:
                await store.get_kv("/nothing-here")

        task = asyncio.create_task(calls())
        await asyncio.sleep(delay)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done, f"cancelled {delay * 1000:.1f} ms in, the loop ran on"


async def test_a_watch_always_ends_when_cancelled_as_it_starts(store: EtcdStore) -> None:
    """Found in CI: an agent stopped right after it came up did not exit in 30 s.  Its watches
    (``etcd-watch``, ``tls-watch``) were cancelled while aetcd created their stream, which waits
    through 3.11's ``asyncio.wait_for``: the cancel was dropped and the watch waited for events
    forever.  Cancelled at every moment of a watch's start, it ends each time (within the 2 s
    probe interval at worst: the watch honours a cancel a library dropped at its next check)."""
    late: list[str] = []
    for delay in [i * 0.0001 for i in range(150)]:
        async def follow() -> None:
            async for _ev in store.watch("/nothing-here/", start_revision=None):
                pass

        task = asyncio.create_task(follow())
        await asyncio.sleep(delay)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=0.5)
        if not done:
            late.append(f"{delay * 1000:.1f} ms")
            done, _ = await asyncio.wait({task}, timeout=3 * store.probe_interval)
        assert done, f"cancelled {delay * 1000:.1f} ms into its start, the watch ran on"
    # (those that did not end at once were dropped by the library and caught by the next check)
    print(f"ended only at the next check: {late}")


async def test_stop_tasks_names_a_task_that_swallows_its_cancel_and_where_it_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = asyncio.Event()

    async def stubborn_inner() -> None:
        while not gate.is_set():
            try:
                await gate.wait()
            except asyncio.CancelledError:
                continue  # (what a library that swallows a cancel does)

    async def stubborn() -> None:
        await stubborn_inner()

    async def polite() -> None:
        await asyncio.sleep(3600)

    tasks = [asyncio.create_task(stubborn(), name="stubborn"), asyncio.create_task(polite(), name="polite")]
    await asyncio.sleep(0)
    assert await stop_tasks(tasks, grace=0.2) == ["stubborn"]
    assert tasks[1].cancelled()
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "daprdockr.cancellation")
    assert "task stubborn did not end 0.2s after it was cancelled" in logged
    assert "in stubborn_inner" in logged and "await gate.wait()" in logged  # (down the await chain)
    gate.set()
    await asyncio.wait(tasks, timeout=1)
    assert tasks[0].done()


EXITS_DESPITE = """
import asyncio, sys, time
from daprdockr.adapters import process
process.EXIT_GRACE, process.LEFTOVER_TIMEOUT = 1.0, 0.2

async def main(stop: asyncio.Event) -> int:
    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass
    asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    return 3

print("start", time.monotonic(), flush=True)
sys.exit(process.run_until_signal(main))
"""


def test_a_process_whose_main_returned_exits_despite_a_task_that_ignores_its_cancel() -> None:
    """The exit is bounded once ``main`` returned: asyncio's own teardown would wait for the
    stubborn task forever; the process logs it, dumps the threads' stacks and exits with main's code."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", EXITS_DESPITE], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    took = time.monotonic() - started
    assert done.returncode == 3, done.stderr
    assert "task stubborn did not end" in done.stderr and "still running 1s after the shutdown ended" in done.stderr
    assert "Thread 0x" in done.stderr or "Current thread" in done.stderr  # (faulthandler's dump)
    assert took < 20, took
