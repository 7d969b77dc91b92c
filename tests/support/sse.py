"""Reading a Server-Sent Events stream in tests (the dashboard's ``/v1/dashboard/stream``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True, slots=True)
class Sse:
    event: str  # "message" when the block names none; "" for a comment (": ping") or a retry line
    id: str
    data: str
    comment: str = ""
    retry: str = ""

    def json(self) -> Any:
        return json.loads(self.data)


def parse_block(block: str) -> Sse:
    fields: dict[str, list[str]] = {}
    comment = ""
    for line in block.split("\n"):
        if line.startswith(":"):
            comment = line[1:].strip()
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
    event = fields.get("event", ["message" if "data" in fields else ""])[0]
    return Sse(event=event, id=fields.get("id", [""])[0], data="\n".join(fields.get("data", [])), comment=comment,
               retry=fields.get("retry", [""])[0])


async def read_events(resp: aiohttp.ClientResponse) -> AsyncIterator[Sse]:
    """Every block of the stream as it arrives (ends when the server ends the stream)."""
    buf = ""
    async for chunk in resp.content.iter_any():
        buf += chunk.decode()
        while "\n\n" in buf:
            block, buf = buf.split("\n\n", 1)
            yield parse_block(block)
