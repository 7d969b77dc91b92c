"""A task asked to stop stops, even when the call it awaits completes in the same loop iteration.

Found in CI: ``daprdockrd`` did not exit within 40 s of SIGTERM.  The ordered shutdown cancels the
acting tasks and waits for them; on Python 3.11 ``asyncio.wait_for`` drops the cancellation of a
task whose awaited call completes just then (CPython gh-86296), so such a loop ran on and the
shutdown waited forever.  Every bounded await in the project goes through
:func:`daprdockr.cancellation.within` (ruff bans ``asyncio.wait_for`` in ``src``).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.cancellation import within

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
