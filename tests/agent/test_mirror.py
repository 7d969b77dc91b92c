"""StateMirror ordering: the agent's own confirmed writes are applied before the watch echoes
them, so duplicates and stale events must be dropped per key (tombstones for deletes)."""

from __future__ import annotations

import pytest

from daprdockr.adapters.etcd_store import WatchEvent
from daprdockr.agent.mirror import StateMirror
from daprdockr.core.keys import KeySchema

KEY = "/daprdockr/instances/myapp/web/1"
OTHER = "/daprdockr/instances/myapp/web/2"


def put(key: str, rev: int, lease: int = 1) -> WatchEvent:
    return WatchEvent(kind="put", key=key, value=b"{}", revision=rev, lease=lease, create_revision=rev)


def delete(key: str, rev: int) -> WatchEvent:
    return WatchEvent(kind="delete", key=key, revision=rev)


@pytest.mark.parametrize(
    ("events", "applied", "present", "lease"),
    [
        # own write at 5 applied first, its watch echo at 5 dropped
        ([put(KEY, 5, lease=7), put(KEY, 5, lease=7)], [True, False], True, 7),
        # watch backlog with an older put of the same key arrives after our newer write
        ([put(KEY, 6, lease=9), put(KEY, 4, lease=1)], [True, False], True, 9),
        # our delete at 8; a stale put (7) from the backlog must not resurrect the key
        ([put(KEY, 5), delete(KEY, 8), put(KEY, 7)], [True, True, False], False, None),
        # the echo of our delete is dropped; a later re-create is applied
        ([put(KEY, 5), delete(KEY, 8), delete(KEY, 8), put(KEY, 9, lease=3)], [True, True, False, True], True, 3),
        # events for other keys older than the mirror revision still apply
        ([put(KEY, 10), put(OTHER, 9)], [True, True], True, 1),
    ],
)
def test_apply_drops_events_not_newer_than_the_key(
    events: list[WatchEvent], applied: list[bool], present: bool, lease: int | None
) -> None:
    mirror = StateMirror(schema=KeySchema("/daprdockr"))
    assert [mirror.apply(ev) for ev in events] == applied
    kv = mirror._kvs.get(KEY)
    assert (kv is not None) == present
    if kv is not None:
        assert kv.lease == lease


def test_reset_forgets_tombstones() -> None:
    mirror = StateMirror(schema=KeySchema("/daprdockr"))
    mirror.apply(delete(KEY, 8))
    mirror.reset([], revision=3)
    assert mirror.apply(put(KEY, 5))
