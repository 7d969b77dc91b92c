"""``ps SERVICE`` and ``svc status SERVICE`` read only that service's keys and the node records,
and print what they printed when they read the whole state."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from typer.testing import CliRunner

from daprdockr.adapters.etcd_reads import _Page
from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.cli.main import app
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.jsondata import dumps
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord, NodeRecord
from daprdockr.core.rollout import Slot

pytestmark = pytest.mark.etcd
WEB = ServiceName(group="myapp", service="web")
OTHERS = (ServiceName(group="myapp", service="web2"), ServiceName(group="myapp", service="api"),
          ServiceName(group="other", service="web"))
COMMANDS = (("ps", "web.myapp"), ("ps", "web.myapp", "--json"), ("svc", "status", "web.myapp"),
            ("svc", "status", "web.myapp", "--json"))


async def _fill(endpoints: str, prefix: str) -> list[str]:
    """Four services with specs, rollouts, history, instances and slots, two nodes, applied and
    drain keys, and a malformed instance key of another service; returns every key."""
    async with EtcdStore(endpoints=parse_endpoints(endpoints), schema=KeySchema(prefix)) as s:
        lease = await s.grant_lease(60)
        since = time.time() - 5 * 3600 - 60  # "5h" old: the same age in both runs
        for name in (WEB, *OTHERS):
            for image in ("busybox:1", "busybox:2"):  # two versions: history and a rollout record
                await VersionStore(s).put_service(ServiceSpec.from_dict({"image": image, "instances": 3}, name=name))
            for n in (1, 2, 3):
                rec = InstanceRecord(service=name, number=n, node=f"n{n % 2}", address=f"10.0.0.{n}",
                                     state="running" if n < 3 else "failed", ports=(("80/tcp", 32000 + n),),
                                     container_id=f"{n}" * 64, since=since, error="exit 1" if n == 3 else "")
                await s.put_raw(s.schema.instance(name, n), dumps(rec.to_dict()), lease=lease)
            await s.put_raw(s.schema.slot(name, 1), dumps(Slot(node="n1", instance=2, since=since).to_dict()),
                            lease=lease)
        for node in ("n0", "n1"):
            await s.put_node(NodeRecord(node_id=node, address=f"10.0.1.{node[1]}"), lease=lease)
            await s.put_applied(node, 1, lease=lease)
        await s.put_raw(s.schema.drain("n1"), b"{}")
        await s.put_raw(s.schema.instance(OTHERS[0], 9), b"not json", lease=lease)
        return await s.keys_under(s.schema.root)


def _record_ranges(monkeypatch: pytest.MonkeyPatch) -> tuple[list[tuple[bytes, bytes]], list[str]]:
    """Every Range request of every store (its key range) and every key it returned."""
    ranges: list[tuple[bytes, bytes]] = []
    keys: list[str] = []
    real = EtcdStore._range_page

    async def page(self: EtcdStore, c: Any, **kw: Any) -> _Page:
        got = await real(self, c, **kw)
        ranges.append((kw["key"], kw["end"]))
        keys.extend(kv.key for kv in got.kvs)
        return got

    monkeypatch.setattr(EtcdStore, "_range_page", page)
    return ranges, keys


def test_ps_and_status_of_a_service_read_only_its_keys_and_print_the_same(
    etcd_endpoints: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    every_key = asyncio.run(_fill(etcd_endpoints, prefix))
    runner = CliRunner()

    def run(*args: str) -> str:
        r = runner.invoke(app, ["--etcd", etcd_endpoints, "--prefix", prefix, *args])
        assert r.exit_code == 0, r.output
        return r.stdout

    with monkeypatch.context() as m:  # what they printed reading the whole state
        m.setattr(EtcdStore, "snapshot_of", lambda self, _name: self.snapshot())
        before = [run(*c) for c in COMMANDS]
    ranges, read = _record_ranges(monkeypatch)
    after = [run(*c) for c in COMMANDS]
    assert after == before, (before, after)
    assert before[1].count('"instance"') == 3 and "exit 1" in before[0] and '"rollout"' in before[3]

    schema = KeySchema(prefix)
    parsed = {k: schema.parse(k) for k in every_key}
    mine = {k for k, p in parsed.items() if p is not None and (p.service == WEB or p.kind == "node")}
    assert {p.kind for k, p in parsed.items() if k in mine and p is not None} == {
        "service", "rollout", "history", "instance", "slot", "node"}
    assert set(read) == mine and len(ranges) == 6 * len(COMMANDS)  # 6 small ranges, one page each
    untouched = [k.encode() for k in every_key if k not in mine]
    assert len(untouched) == 3 * 8 + 4 and not [k for k in untouched for start, end in ranges if start <= k < end]
