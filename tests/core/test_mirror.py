"""StateMirror ordering: the agent's own confirmed writes are applied before the watch echoes
them, so duplicates and stale events must be dropped per key (tombstones for deletes)."""

from __future__ import annotations

import json

import pytest

from daprdockr.core.keys import KeySchema
from daprdockr.core.mirror import StateMirror, WatchEvent
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord

KEY = "/daprdockr/instances/myapp/web/1"
OTHER = "/daprdockr/instances/myapp/web/2"


WEB = ServiceName.parse("web.myapp")
RECORD = json.dumps({"node": "n1", "address": "127.0.0.11", "state": "running"}).encode()


def put(key: str, rev: int, lease: int = 1) -> WatchEvent:
    return WatchEvent(kind="put", key=key, value=RECORD, revision=rev, lease=lease, create_revision=rev)


def lease_of(mirror: StateMirror, key: str) -> int | None:
    """The lease of the instance at ``key`` as the mirror's state shows it (None: absent)."""
    rec = mirror.state().instances.get((WEB, int(key.rsplit("/", 1)[1])))
    return rec.lease if rec is not None else None


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
    assert lease_of(mirror, KEY) == (lease if present else None)


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
    assert lease_of(mirror, KEY) is None
    assert mirror.apply(put(KEY, 11, lease=4))
    assert lease_of(mirror, KEY) == 4


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


SPEC_KEY = "/daprdockr/services/myapp/web"


def _spec(rev: int, value: bytes) -> WatchEvent:
    return WatchEvent(kind="put", key=SPEC_KEY, value=value, revision=rev)


def test_a_malformed_spec_keeps_the_last_good_one_and_is_reported_once() -> None:
    mirror = StateMirror(schema=KeySchema("/daprdockr"))
    mirror.apply(_spec(2, json.dumps({"image": "busybox", "instances": 3}).encode()))
    mirror.apply(_spec(3, b'{"image": "busybox", "instances": "3"}'))
    state = mirror.state()
    assert state.services[WEB].instances == 3 and WEB in state.invalid_services and not state.frozen
    assert [k for k, _ in mirror.new_problems()] == [SPEC_KEY]
    assert mirror.new_problems() == []  # once per bad value
    mirror.apply(_spec(4, b"{truncated"))
    assert [k for k, _ in mirror.new_problems()] == [SPEC_KEY]  # a new bad value is reported again
    mirror.apply(WatchEvent(kind="delete", key=SPEC_KEY, revision=5))
    assert WEB not in mirror.state().services
    mirror.apply(_spec(6, b"{truncated"))
    assert mirror.state().frozen == {WEB}  # no good version known since the delete


def test_routing_version_moves_for_services_and_instances_only() -> None:
    mirror = StateMirror(schema=KeySchema("/daprdockr"))
    v0 = mirror.routing_version
    mirror.apply(WatchEvent(kind="put", key="/daprdockr/nodes/n1", value=b'{"address": "127.0.0.11"}', revision=2))
    assert mirror.routing_version == v0
    mirror.apply(put(KEY, 3))
    assert mirror.routing_version == v0 + 1
    mirror.apply(_spec(4, json.dumps({"image": "busybox"}).encode()))
    assert mirror.routing_version == v0 + 2


def _record(state: str, health: str = "", port: int = 31001) -> bytes:
    return json.dumps({"node": "n1", "address": "127.0.0.11", "state": state, "health": health,
                       "ports": {"8080/tcp": port}}).encode()


def _put(key: str, rev: int, value: bytes) -> WatchEvent:
    return WatchEvent(kind="put", key=key, value=value, revision=rev, lease=1, create_revision=1)


@pytest.mark.parametrize(
    ("events", "removal"),
    [
        ([_put(KEY, 5, _record("starting")), _put(KEY, 6, _record("running"))], 0),  # a start: no removal
        ([_put(KEY, 5, _record("running")), delete(KEY, 8)], 8),  # scale-down / release
        ([_put(KEY, 5, _record("running")), _put(KEY, 7, _record("starting"))], 7),  # retired before a replacement
        ([_put(KEY, 5, _record("running", "healthy")), _put(KEY, 6, _record("running", "unhealthy"))], 6),
        ([_put(KEY, 5, _record("running")), _put(KEY, 6, b"{garbage")], 6),  # bad data is no route
        ([_put(KEY, 5, _record("starting")), delete(KEY, 6)], 0),  # never routable: nothing to confirm
        ([_put(KEY, 5, _record("running")), _put(OTHER, 6, _record("running")), delete(KEY, 9)], 9),
        ([_put(KEY, 5, _record("running")), _put(KEY, 6, _record("running", port=31002))], 6),  # repointed
        ([_put(KEY, 5, _record("running")), _put(KEY, 6, _record("running"))], 0),  # same peer, new since
    ],
)
def test_removal_revision_is_tracked_per_event(events: list[WatchEvent], removal: int) -> None:
    """Regression: an agent published the revision it applied only when the set it served shrank,
    so an instance that came and went between two of its reads (flips every 0.3 s) was never
    confirmed and its owner waited out the bound.  The mirror now sees every removal event."""
    mirror = StateMirror(schema=KeySchema("/daprdockr"))
    for ev in events:  # no state() in between: the removal is seen without a read of the state
        mirror.apply(ev)
    assert mirror.removal_revision == removal
