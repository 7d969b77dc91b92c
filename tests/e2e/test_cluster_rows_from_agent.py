"""``svc ls``, ``status`` and ``nodes`` read their rows from an agent on this host (its mirror,
once it holds the newest write under the prefix), and the same rows as a read of every key in
etcd (``--from-etcd``); with no agent answering they fall back to etcd.  Real etcd, two hollow
agent processes on 127.0.0.11/12."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from daprdockr.cli.main import app
from tests.e2e.test_hollow_cluster import hollow_agents
from tests.support.procs import free_port

pytestmark = [pytest.mark.etcd, pytest.mark.slow]


def run(etcd: str, prefix: str, *args: str) -> Any:
    got = CliRunner().invoke(app, ["--etcd", etcd, "--prefix", prefix, *args])
    assert got.exit_code == 0, got.output
    return json.loads(got.stdout) if "--json" in args else got.stdout


def without_age(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "up"} for row in rows]


def wait_for(check: Any, *, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {within}s")
        time.sleep(0.3)


def test_cluster_rows_come_from_a_local_agent_and_match_etcd(etcd_endpoints: str, prefix: str, tmp_path: Path) -> None:
    with hollow_agents(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=2) as apis:
        run(etcd_endpoints, prefix, "svc", "set", "web.shop", "--image", "hollow", "--instances", "4")

        def all_running() -> bool:
            rows = run(etcd_endpoints, prefix, "svc", "ls", "--json", "--from-etcd")
            return bool(rows) and rows[0]["running"] == 4 and len(
                run(etcd_endpoints, prefix, "nodes", "--json", "--from-etcd")) == 2

        wait_for(all_running, within=60, what="4 instances running on 2 nodes")

        status = run(etcd_endpoints, prefix, "status", "--json")
        assert status["source"].startswith("agent h"), status["source"]
        direct = run(etcd_endpoints, prefix, "status", "--json", "--from-etcd")
        assert direct["source"] == "etcd"
        assert status["services"] == direct["services"]
        assert without_age(status["nodes"]) == without_age(direct["nodes"])
        assert run(etcd_endpoints, prefix, "svc", "ls", "--json") == \
            run(etcd_endpoints, prefix, "svc", "ls", "--json", "--from-etcd")
        assert "read from agent h" in run(etcd_endpoints, prefix, "status")

        # read after write: each new spec is in the very next view an agent serves
        for i in range(5):
            run(etcd_endpoints, prefix, "svc", "set", f"s{i}.shop", "--image", "hollow", "--instances", "0")
            listed = {r["service"] for r in run(etcd_endpoints, prefix, "svc", "ls", "--json")}
            assert f"s{i}.shop" in listed, listed

        # a named agent that does not answer: the rows still come, from etcd
        closed = f"127.0.0.1:{free_port()}"
        fallback = run(etcd_endpoints, prefix, "status", "--json", "--api", closed)
        assert fallback["source"] == "etcd"
        assert fallback["services"] == run(etcd_endpoints, prefix, "status", "--json", "--from-etcd")["services"]

        # an agent asked for a revision its mirror does not reach answers 503 with its own, in time
        api = next(iter(apis.values()))
        t0 = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{api}/v1/cluster?min_revision=999999999&wait=0.3", timeout=5)
        assert err.value.code == 503
        assert json.load(err.value)["revision"] > 0
        assert time.monotonic() - t0 < 3
