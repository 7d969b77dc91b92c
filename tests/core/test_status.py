"""Table tests for the pure operator views."""

from __future__ import annotations

from dataclasses import replace

import pytest

from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord, NodeRecord
from daprdockr.core.state import ClusterState
from daprdockr.core.status import _age, instance_rows, node_rows, progress, service_rows

WEB = ServiceName(group="myapp", service="web")
OLD = ServiceName(group="myapp", service="old")
SPEC = ServiceSpec(name=WEB, image="busybox", instances=3, http_host="web.example.com", http_port=80)


def rec(n: int, state: str = "running", node: str = "n1", name: ServiceName = WEB,
        spec_hash: str = SPEC.runtime_hash, error: str = "") -> InstanceRecord:
    return InstanceRecord(service=name, number=n, node=node, address="127.0.0.11", state=state,  # type: ignore[arg-type]
                          spec_hash=spec_hash, since=1000.0, error=error, container_id="abcdef0123456789")


def state(*recs: InstanceRecord) -> ClusterState:
    return ClusterState(
        services={WEB: SPEC},
        instances={r.key_tuple: r for r in recs},
        nodes={"n1": NodeRecord(node_id="n1", address="127.0.0.11", started_at=900.0)},
    )


@pytest.mark.parametrize(("since", "now", "text"), [(0, 5, "-"), (100, 105, "5s"), (0.5, 300.5, "5m"),
                                                    (1, 7201, "2h"), (1, 3 * 86400 + 1, "3d")])
def test_age(since: float, now: float, text: str) -> None:
    assert _age(since, now) == text


def test_service_rows_count_running_failed_and_orphans() -> None:
    rows = service_rows(state(rec(1), rec(2, "failed"), rec(3, "paused"), rec(1, name=OLD)))
    assert rows == [
        {"service": "old.myapp", "image": "", "desired": 0, "running": 1, "failed": 0, "paused": 0, "http_host": "",
         "deleted": True, "status": "deleted", "invalid": ""},
        {"service": "web.myapp", "image": "busybox", "desired": 3, "running": 1, "failed": 1, "paused": 1,
         "http_host": "web.example.com", "deleted": False, "status": "ok", "invalid": ""},
    ]


def test_service_rows_show_an_invalid_spec_with_its_reason() -> None:
    frozen = ClusterState(invalid_services={WEB: "instances: '2' must be an integer"},
                          instances={(WEB, 1): rec(1)})
    (row,) = service_rows(frozen)
    assert row["status"] == "invalid" and row["invalid"] == "instances: '2' must be an integer"
    assert row["running"] == 1 and not row["deleted"]
    kept = ClusterState(services={WEB: SPEC}, invalid_services={WEB: "truncated"})
    (row,) = service_rows(kept)
    assert row["status"] == "invalid" and row["desired"] == 3 and row["image"] == "busybox"


def test_instance_rows_filter_and_shape() -> None:
    rows = instance_rows(state(rec(2), rec(1), rec(1, name=OLD)), now=1010.0, service=WEB)
    assert [r["instance"] for r in rows] == [1, 2]
    assert rows[0]["age"] == "10s" and rows[0]["container_id"] == "abcdef012345"


def test_node_rows() -> None:
    rows = node_rows(state(rec(1), rec(2)), now=1000.0)
    assert rows[0]["instances"] == 2 and rows[0]["runtime"] == "docker"
    hollow = replace(state(), nodes={"h1": NodeRecord(node_id="h1", address="127.0.0.11", runtime="hollow")})
    assert node_rows(hollow, now=1000.0)[0]["runtime"] == "hollow"


@pytest.mark.parametrize(
    ("recs", "running", "failed", "done"),
    [
        ((rec(1), rec(2), rec(3)), 3, 0, True),
        ((rec(1), rec(2)), 2, 0, False),
        ((rec(1), rec(2), rec(3, spec_hash="old")), 2, 0, False),
        ((rec(1), rec(2), rec(3, "failed", error="image x is not available")), 2, 1, False),
        ((rec(1), rec(2), rec(3), rec(4)), 3, 0, True),
    ],
)
def test_progress(recs: tuple[InstanceRecord, ...], running: int, failed: int, done: bool) -> None:
    p = progress(state(*recs), SPEC)
    assert (p.running, len(p.failed), p.done) == (running, failed, done)
    if failed:
        assert "not available" in p.failed[0] and "n1" in p.failed[0]
