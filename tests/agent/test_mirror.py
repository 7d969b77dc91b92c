"""StateMirror ordering: the agent's own confirmed writes are applied before the watch echoes
them, so duplicates and stale events must be dropped per key (tombstones for deletes)."""

from __future__ import annotations

import json

import pytest

from daprdockr.adapters.etcd_store import WatchEvent
from daprdockr.agent.mirror import StateMirror
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import InstanceRecord
from daprdockr.core.names import ServiceName

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


def test_events_older_than_the_last_full_read_are_dropped() -> None:
    """The read at 10 no longer holds KEY (deleted before it); a late put at 7 must not revive it."""
    mirror = StateMirror(schema=KeySchema("/daprdockr"))
    mirror.reset([], revision=10)
    assert not mirror.apply(put(KEY, 7))
    assert KEY not in mirror._kvs
    assert mirror.apply(put(KEY, 11))
    assert KEY in mirror._kvs


def _instance(key: str, rev: int, address: str) -> WatchEvent:
    value = InstanceRecord(
        service=ServiceName.parse("web.myapp"), number=int(key.rsplit("/", 1)[1]), node="n1",
        address=address, state="running",
    ).to_dict()
    return WatchEvent(kind="put", key=key, value=json.dumps(value).encode(), revision=rev, lease=1,
                      create_revision=rev)


def test_state_follows_changes_of_cached_decodes() -> None:
    """Values are decoded once per change: a new put, a garbage put and a delete all show."""
    mirror = StateMirror(schema=KeySchema("/daprdockr"))
    web = ServiceName.parse("web.myapp")
    mirror.apply(_instance(KEY, 2, "127.0.0.11"))
    mirror.apply(_instance(OTHER, 3, "127.0.0.12"))
    assert mirror.state().instances[(web, 1)].address == "127.0.0.11"
    mirror.apply(_instance(KEY, 4, "127.0.0.13"))
    assert mirror.state().instances[(web, 1)].address == "127.0.0.13"
    assert mirror.state().instances[(web, 2)].address == "127.0.0.12"
    mirror.apply(WatchEvent(kind="put", key=KEY, value=b"{not json", revision=5, lease=1, create_revision=2))
    state = mirror.state()
    assert (web, 1) not in state.instances and [k for k, _ in state.skipped] == [KEY]
    mirror.apply(delete(OTHER, 6))
    assert mirror.state().instances == {}
