"""Root-task supervision: only the agent's own cancellation ends a task."""

from __future__ import annotations

import asyncio

from daprdockr.agent.supervisor import TaskStatus, guarded
from daprdockr.core.backoff import Backoff


async def test_a_library_cancelled_error_restarts_the_task() -> None:
    status, runs = TaskStatus(), 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise asyncio.CancelledError  # what grpc.aio raises in a call whose channel was closed
        await asyncio.sleep(3600)

    task = asyncio.create_task(guarded("watch", flaky, status=status, backoff=Backoff(base=0.01, max_delay=0.01)))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if runs == 3:
            break
    assert runs == 3 and status.state["watch"] == "running" and status.restarts["watch"] == 2
    assert status.not_running() == []
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() and status.state["watch"] == "stopped"
    assert status.not_running() == ["watch"]


async def test_shutdown_during_the_restart_delay_stops_the_task() -> None:
    status = TaskStatus()

    async def broken() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(guarded("x", broken, status=status, backoff=Backoff(base=10, max_delay=10)))
    await asyncio.sleep(0.05)
    assert status.state["x"] == "restarting" and status.not_running() == ["x"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert status.state["x"] == "stopped"
