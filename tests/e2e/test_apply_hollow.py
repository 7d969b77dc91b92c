"""``daprdockr apply -f DIR --wait`` end to end: real hollow agents (``daprdockr agent --runtime
hollow``, one process each) run what a directory of specs says; an edited document is rolled out
and followed by ``--wait``; ``--prune`` stops the service no file names any more."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.state import ClusterState
from tests.e2e.test_hollow_cluster import hollow_agents, wait_state

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

NODES = 2


def doc(service: str, instances: int, **extra: Any) -> dict[str, Any]:
    return {"name": f"{service}.shop", "image": "hollow", "instances": instances, "http_port": 8080,
            "env": {"V": "1"}, **extra}


def write(path: Path, docs: list[dict[str, Any]]) -> None:
    import yaml

    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def running_by_service(state: ClusterState) -> dict[str, Counter[str]]:
    """service -> Counter of the runtime hashes of its running instances."""
    out: dict[str, Counter[str]] = {}
    for rec in state.instances.values():
        if rec.state == "running":
            out.setdefault(str(rec.service), Counter())[rec.spec_hash] += 1
    return out


def converged(state: ClusterState) -> bool:
    """Every service runs its spec's number of instances, all of its spec's version, and nothing
    runs of a service that is gone."""
    running = running_by_service(state)
    want = {str(name): Counter({spec.runtime_hash: spec.instances}) if spec.instances else None
            for name, spec in state.services.items()}
    return all(running.get(name) == hashes for name, hashes in want.items()) and set(running) <= set(want)


async def test_apply_a_directory_to_hollow_agents_and_wait(etcd_endpoints: str, prefix: str, tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    write(specs / "10-front.yaml", [doc("web", 3), doc("api", 2)])
    write(specs / "20-back.yaml", [doc("db", 1), doc("jobs", 2)])
    env = {**os.environ, "DAPRDOCKR_ETCD": etcd_endpoints, "DAPRDOCKR_PREFIX": prefix}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "daprdockr", *args], capture_output=True, text=True, env=env,
                              timeout=180)

    async with EtcdStore(endpoints=parse_endpoints(etcd_endpoints), schema=KeySchema(prefix), timeout=10.0) as store:
        with hollow_agents(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=NODES):
            try:
                await wait_state(store, lambda s: len(s.nodes) == NODES, within=60, what="nodes registered")
                first = cli("apply", "-f", str(specs), "--wait", "--timeout", "90")
                assert first.returncode == 0, first.stderr
                assert "applied: 4 created" in first.stdout
                state = await store.snapshot()
                assert converged(state), running_by_service(state)  # --wait returned only once all ran
                assert {str(n): s.instances for n, s in state.services.items()} == \
                    {"web.shop": 3, "api.shop": 2, "db.shop": 1, "jobs.shop": 2}

                # one document scaled, one replaced (env): --wait follows both until they run updated
                write(specs / "10-front.yaml", [doc("web", 5), doc("api", 2, env={"V": "2"})])
                plan = cli("plan", "-f", str(specs))
                assert plan.returncode == 2 and "web.shop: scaled 3 -> 5" in plan.stdout \
                    and "api.shop: replaced (env)" in plan.stdout, plan.stdout
                second = cli("apply", "-f", str(specs), "--wait", "--timeout", "90", "--json")
                assert second.returncode == 0, second.stderr
                changes = {c["service"]: c["change"] for c in json.loads(second.stdout)["changes"]}
                assert changes == {"web.shop": "scaled", "api.shop": "replaced", "db.shop": "unchanged",
                                   "jobs.shop": "unchanged"}
                state = await store.snapshot()
                running = running_by_service(state)
                assert sum(running["web.shop"].values()) == 5
                api = next(s for n, s in state.services.items() if str(n) == "api.shop")
                assert running["api.shop"] == Counter({api.runtime_hash: 2})

                # pruned: the service no file names any more is deleted and its instances stop
                write(specs / "20-back.yaml", [doc("db", 1)])
                third = cli("apply", "-f", str(specs), "--prune", "--group", "shop", "--wait", "--timeout", "90")
                assert third.returncode == 0, third.stderr
                assert "jobs.shop: deleted" in third.stdout
                done = await wait_state(store, converged, within=60, what="jobs.shop's instances stopped")
                assert "jobs.shop" not in running_by_service(done)
                assert cli("plan", "-f", str(specs), "--prune", "--group", "shop").returncode == 0
            except BaseException:
                for node in (f"h{i + 1}" for i in range(NODES)):
                    tail = (tmp_path / f"{node}.log").read_text(errors="replace").splitlines()[-15:]
                    print(f"----- {node}\n" + "\n".join(tail), file=sys.stderr)
                raise
