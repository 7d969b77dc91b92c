"""The fanout's gate (one home for the agent and ``daprdockr dns``) and what it tells confirmed removal."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from daprdockr.agent.changes import Changes
from daprdockr.agent.fanout import RoutingFanout
from daprdockr.agent.routing_ack import RoutingAck
from daprdockr.core.keys import KeySchema
from daprdockr.core.mirror import StateMirror, WatchEvent
from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState

SCHEMA = KeySchema("/daprdockr")
WEB = ServiceName.parse("web.myapp")
SPEC = json.dumps({"image": "busybox", "instances": 1}).encode()
RECORD = json.dumps({"node": "n1", "address": "127.0.0.11", "state": "running"}).encode()


class Recorder:
    def __init__(self) -> None:
        self.revisions: list[int] = []

    def update(self, state: ClusterState) -> None:
        self.revisions.append(state.revision)


class NoStore:
    async def put_applied(self, node_id: str, revision: int, *, lease: int) -> None:
        raise AssertionError("not written here")


class NoLease:
    lease = 0


def spec(rev: int) -> WatchEvent:
    return WatchEvent(kind="put", key=SCHEMA.service(WEB), value=SPEC, revision=rev)


def instance(rev: int) -> WatchEvent:
    return WatchEvent(kind="put", key=SCHEMA.instance(WEB, 1), value=RECORD, revision=rev, lease=1,
                      create_revision=rev)


def gone(rev: int) -> WatchEvent:
    return WatchEvent(kind="delete", key=SCHEMA.instance(WEB, 1), revision=rev)


def node(rev: int) -> WatchEvent:
    return WatchEvent(kind="put", key=SCHEMA.node("n2"), value=json.dumps({"address": "127.0.0.12"}).encode(),
                      revision=rev, lease=2, create_revision=rev)


def applied(rev: int) -> WatchEvent:
    return WatchEvent(kind="put", key=SCHEMA.applied("n2"), value=json.dumps({"revision": rev}).encode(),
                      revision=rev, lease=2)


Step = Callable[[StateMirror, Changes], None]


def etcd(ev: WatchEvent) -> Step:
    def step(mirror: StateMirror, changes: Changes) -> None:
        mirror.apply(ev)
        changes.etcd_changed()
    return step


def local(mirror: StateMirror, changes: Changes) -> None:
    changes.local_changed()


@pytest.mark.parametrize(("steps", "pushed"), [
    pytest.param([], [True], id="the-first-state"),
    pytest.param([etcd(spec(2))], [True, True], id="a-spec"),
    pytest.param([etcd(spec(2)), etcd(node(3)), etcd(applied(4))], [True, True, False, False],
                 id="node-and-applied-writes-push-nothing"),
    pytest.param([local], [True, True], id="our-containers-changed"),
    pytest.param([etcd(spec(2)), etcd(instance(3))], [True, True, True], id="an-instance"),
])
def test_the_gate_pushes_only_a_routing_change(steps: list[Step], pushed: list[bool]) -> None:
    mirror, changes, recorder = StateMirror(schema=SCHEMA), Changes(), Recorder()
    fanout = RoutingFanout(mirror=mirror, changes=changes)
    fanout.receivers.append(recorder)
    said = [fanout.fanout_once()]
    for step in steps:
        step(mirror, changes)
        said.append(fanout.fanout_once())
    assert said == pushed
    assert len(recorder.revisions) == pushed.count(True)
    assert fanout.wake.is_set() == bool(steps)  # (subscribed to etcd and local changes)


def test_a_removal_reaches_confirmed_removal() -> None:
    mirror, changes = StateMirror(schema=SCHEMA), Changes()
    acks = RoutingAck(node_id="n1", store=NoStore(), lease=NoLease(), cluster=None,  # type: ignore[arg-type]
                      confirm_timeout=1.0)
    fanout = RoutingFanout(mirror=mirror, changes=changes, node_id="n1", acks=acks)
    for ev in (spec(2), instance(3)):
        mirror.apply(ev)
    fanout.fanout_once()
    assert acks.tracker.removal_at == 0
    acks.acknowledge("nginx", 3)
    mirror.apply(gone(5))
    fanout.fanout_once()
    assert (acks.tracker.removal_at, acks.applied_revision()) == (5, 3)
    acks.acknowledge("nginx", 5)
    assert acks.applied_revision() == 5
