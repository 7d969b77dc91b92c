"""Confirmed removal: when a container is out of every router, and who must still say so.  Pure.

An owner stops a routed container only after every live agent published an ``applied/<node>``
revision at or past the revision that took the container out of its routes.  Two facts decide
whom it waits for:

* :func:`left_routing_at` — the revision at which an instance key stopped routing a container,
  from the key's history (its record named the container ``running``; the next write named
  something else, or deleted the key).  After a restart, the agent finds a container whose key
  another node now holds: the container left the routers when its old key was deleted (the lease
  expired), long before the current record's revision, and the routers published that
  revision, not the later one: waiting for the later one waited for nothing that comes.  0: the
  container was never routed (nothing to confirm).
* :func:`lagging` — the live nodes that have not applied the removal revision, leaving out those
  that joined after it (their first table never held the container).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """One write of an instance key: its revision and value (None: deleted)."""

    revision: int
    value: bytes | None


def _routes(value: bytes | None, container_id: str) -> bool:
    """The record routes ``container_id``: it names it and says running.  Unreadable: no."""
    if value is None:
        return False
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return (isinstance(data, dict) and data.get("container_id") == container_id
            and data.get("state") == "running" and data.get("health", "") in ("", "healthy"))


def left_routing_at(events: Iterable[KeyEvent], container_id: str) -> int:
    """The revision of the last write that took ``container_id`` out of the key's route (0 if no
    record ever routed it, or if it is still routed after the last event)."""
    routed, left = False, 0
    for ev in sorted(events, key=lambda e: e.revision):
        now = _routes(ev.value, container_id)
        if routed and not now:
            left = ev.revision
        routed = now
    return 0 if routed else left


def lagging(*, revision: int, nodes: Mapping[str, int], applied: Mapping[str, int]) -> list[str]:
    """The live nodes (``nodes``: node id -> the revision its node key was created at) whose
    published applied revision is below ``revision``; a node that joined after ``revision``
    never routed what it removed."""
    return sorted(n for n, joined in nodes.items() if applied.get(n, 0) < revision and not joined > revision)
