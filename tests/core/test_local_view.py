"""Table tests for local_view: this node's own instances follow its Docker engine, not a stale etcd."""

from __future__ import annotations

from daprdockr.core.containers import ContainerInfo
from daprdockr.core.local_view import local_view
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from daprdockr.core.state import ClusterState

WEB = ServiceName(group="myapp", service="web")


def rec(n: int, node: str, *, cid: str, port: int, state: str = "running") -> InstanceRecord:
    return InstanceRecord(service=WEB, number=n, node=node, address="127.0.0.11", state=state,  # type: ignore[arg-type]
                          container_id=cid, ports=(("80/tcp", port),))


def ctr(n: int, *, cid: str, port: int, created: float = 1.0) -> ContainerInfo:
    return ContainerInfo(id=cid, service=WEB, number=n, node="n1", spec_hash="h", running=True,
                         ports=(("80/tcp", port),), created=created)


STATE = ClusterState(instances={
    (WEB, 1): rec(1, "n1", cid="a", port=31001),
    (WEB, 2): rec(2, "n1", cid="b", port=31002),
    (WEB, 3): rec(3, "n2", cid="c", port=31003),
    (WEB, 4): rec(4, "n1", cid="d", port=31004, state="starting"),
})


def test_everything_matches_returns_the_same_state() -> None:
    assert local_view(STATE, node_id="n1", routable=[ctr(1, cid="a", port=31001), ctr(2, cid="b", port=31002)]) \
        is STATE


def test_own_instance_without_a_running_container_is_dropped_at_once() -> None:
    view = local_view(STATE, node_id="n1", routable=[ctr(1, cid="a", port=31001)])
    assert sorted(n for _, n in view.instances) == [1, 3, 4]  # 2 gone; n2's 3 and the starting 4 untouched


def test_restarted_container_is_served_on_its_new_port() -> None:
    view = local_view(STATE, node_id="n1", routable=[ctr(1, cid="a", port=31001), ctr(2, cid="b2", port=32002)])
    assert view.instances[(WEB, 2)].ports == (("80/tcp", 32002),) and view.instances[(WEB, 2)].container_id == "b2"


def test_other_nodes_records_are_never_touched() -> None:
    view = local_view(STATE, node_id="n2", routable=[])
    assert (WEB, 3) not in view.instances and view.instances[(WEB, 1)] == STATE.instances[(WEB, 1)]
