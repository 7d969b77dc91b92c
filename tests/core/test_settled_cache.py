"""The planner's settled cache: a node's running, current containers that needed nothing are
skipped while nothing they depend on changed; plans with the cache (kept across passes) equal
plans without it after random changes to records, containers, health, restarts, specs and the
lease."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from daprdockr.core.containers import ContainerInfo
from daprdockr.core.model import InstanceRecord, NodeRecord, ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.plan import Observed, SettledCache, plan

WEB = ServiceName.parse("web.s")
ME = "n1"
NODES = {ME: NodeRecord(node_id=ME, address="127.0.0.11", lease=7)}


def spec(env: str) -> ServiceSpec:
    return ServiceSpec.from_dict({"image": "busybox", "instances": 6, "env": {"V": env}}, name=WEB)


changes = st.lists(st.tuples(st.sampled_from(["state", "health", "restart", "replace", "spec", "lease", "ports",
                                              "stop", "same"]), st.integers(1, 6)), max_size=30)


@settings(max_examples=200, deadline=None)
@given(changes)
def test_plans_with_the_cache_equal_plans_without(steps: list[tuple[str, int]]) -> None:
    desired = {WEB: spec("1")}
    lease = 7
    containers = {n: ContainerInfo(id=f"c{n}", service=WEB, number=n, node=ME, spec_hash=desired[WEB].runtime_hash,
                                   running=True, ports=(("8080/tcp", 3000 + n),)) for n in range(1, 7)}
    records = {(WEB, n): InstanceRecord(service=WEB, number=n, node=ME, address="127.0.0.11", state="running",
                                        lease=lease, container_id=f"c{n}", spec_hash=desired[WEB].runtime_hash,
                                        ports=(("8080/tcp", 3000 + n),)) for n in range(1, 7)}
    health: dict[str, str] = {}
    restart: set[str] = set()
    cache = SettledCache()
    for kind, n in [("same", 1), *steps, ("same", 1)]:
        key = (WEB, n)
        if kind == "state":
            records[key] = replace(records[key], state="starting" if records[key].state == "running" else "running")
        elif kind == "health":
            health[f"c{n}"] = "unhealthy" if health.get(f"c{n}") != "unhealthy" else "healthy"
        elif kind == "restart":
            restart ^= {containers[n].id}
        elif kind == "replace":
            containers[n] = replace(containers[n], id=f"{containers[n].id}x")
        elif kind == "spec":
            desired = {WEB: spec(str(n))}
        elif kind == "lease":
            lease = 7 if lease == 8 else 8
        elif kind == "ports":
            containers[n] = replace(containers[n], ports=(("8080/tcp", 4000 + n),))
        elif kind == "stop":
            containers[n] = replace(containers[n], running=not containers[n].running)
        obs = Observed(node_id=ME, lease=lease, now=100.0, instances=dict(records), nodes=NODES,
                       containers=list(containers.values()), health=dict(health), restart=frozenset(restart),
                       claiming=True)
        assert plan(desired, replace(obs, settled=cache)) == plan(desired, obs), kind
