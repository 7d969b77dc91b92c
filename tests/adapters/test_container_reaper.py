"""The background removal of containers Docker refused to remove: its loop ends when cancelled."""

from __future__ import annotations

import asyncio

from daprdockr.adapters.container_reaper import ContainerReaper
from daprdockr.core.containers import ContainerInfo
from daprdockr.core.names import ServiceName
from daprdockr.errors import ContainerError

WEB = ServiceName.parse("web.app")


def container(cid: str) -> ContainerInfo:
    return ContainerInfo(id=cid, service=WEB, number=1, node="n1", spec_hash="h", running=False)


async def test_a_cancellation_in_the_same_turn_as_a_new_container_ends_the_loop() -> None:
    async def refuse(cid: str) -> None:
        raise ContainerError("device or resource busy", transient=True)

    reaper = ContainerReaper(remove=refuse, base=0.01, cap=30.0)
    reaper.add(container("a"), error="busy")
    task = asyncio.create_task(reaper.run())
    await asyncio.sleep(0.1)  # tried, failed, now waiting (a finite time) for the next try or a new one
    assert reaper.pending()[0]["attempts"] >= 1
    reaper.add(container("b"), error="busy")
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done and task.cancelled()
