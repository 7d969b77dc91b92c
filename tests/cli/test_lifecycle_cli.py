"""The lifecycle commands as real processes against a real etcd (no agents needed): ``--json`` on
``svc set / rollback / resume`` and ``node drain / undrain``, JSON lines for ``--wait`` progress,
a clear error for an unknown node, and text from etcd (a rollout's reason, an instance's error)
shown with its control characters escaped in ``svc status`` and the ``--wait`` progress line."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.lifecycle_store import LifecycleStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.jsondata import dumps
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord, NodeRecord
from tests.cli.test_cli import IMG, run_bin

pytestmark = pytest.mark.etcd
WEB = ServiceName(group="lc", service="web")
EVIL = "boom\x1b[2J\x1b]0;title\x07\r[bold]x[/bold]"


async def with_store(etcd: str, prefix: str, fn: Callable[[EtcdStore], Awaitable[None]]) -> None:
    async with EtcdStore(endpoints=parse_endpoints(etcd), schema=KeySchema(prefix)) as store:
        await fn(store)


def spec(version: str) -> ServiceSpec:
    return ServiceSpec.from_dict({"image": IMG, "instances": 1, "env": {"V": version}}, name=WEB)


async def test_lifecycle_commands_answer_json(etcd_endpoints: str, prefix: str) -> None:
    def dd(*args: str) -> tuple[int, str, str]:
        r = run_bin("daprdockr", *args, etcd=etcd_endpoints, prefix=prefix)
        return r.returncode, r.stdout, r.stderr

    code, out, err = dd("svc", "set", str(WEB), "--image", IMG, "--env", "V=1", "--json")
    assert code == 0, err
    assert json.loads(out) == spec("1").to_dict()
    code, out, err = dd("svc", "set", str(WEB), "--env", "V=2", "--json")
    assert code == 0 and json.loads(out)["env"] == {"V": "2"}, err
    code, out, err = dd("svc", "rollback", str(WEB), "--json")
    assert code == 0, err
    assert json.loads(out) == {"service": str(WEB), "to_version": 1, "spec": spec("1").to_dict()}

    async def pause(store: EtcdStore) -> None:
        assert await LifecycleStore(store).fail_rollout(WEB, target=spec("1").runtime_hash, reason="r",
                                                        rollback=False) == "paused"
        lease = await store.grant_lease(60)
        await store.put_node(NodeRecord(node_id="n1", address="127.0.0.11"), lease=lease)

    await with_store(etcd_endpoints, prefix, pause)
    code, out, err = dd("svc", "resume", str(WEB), "--json")
    assert code == 0 and json.loads(out) == {"service": str(WEB), "rollout": "rolling"}, err

    code, out, err = dd("node", "drain", "ghost")
    assert code == 3 and "node ghost is not known" in err and "live nodes: n1" in err, (code, err)
    code, out, err = dd("node", "drain", "n1", "--json")
    assert code == 0 and json.loads(out) == {"node": "n1", "state": "draining", "instances": 0}, err
    code, out, err = dd("node", "drain", "n1", "--wait", "--json", "--timeout", "10")
    assert code == 0 and json.loads(out) == {"node": "n1", "state": "drained", "instances": 0}, err
    assert [json.loads(line) for line in err.splitlines()] == [{"node": "n1", "instances": 0}]
    code, out, err = dd("node", "undrain", "n1", "--json")
    assert code == 0 and json.loads(out) == {"node": "n1", "state": "ready"}, err
    code, out, err = dd("node", "undrain", "ghost")
    assert code == 3 and "node ghost is not known" in err, (code, err)


async def test_status_and_wait_progress_escape_text_from_etcd(etcd_endpoints: str, prefix: str) -> None:
    async def setup(store: EtcdStore) -> None:
        await VersionStore(store).put_service(spec("1"))
        await VersionStore(store).put_service(spec("2"))
        assert await LifecycleStore(store).fail_rollout(WEB, target=spec("2").runtime_hash, reason=EVIL,
                                                        rollback=False) == "paused"
        lease = await store.grant_lease(60)
        rec = InstanceRecord(service=WEB, number=1, node="n9", address="127.0.0.19", state="failed", error=EVIL,
                             spec_hash=spec("2").runtime_hash, since=time.time())
        await store.put_raw(store.schema.instance(WEB, 1), dumps(rec.to_dict()), lease=lease)

    await with_store(etcd_endpoints, prefix, setup)
    status = run_bin("daprdockr", "svc", "status", str(WEB), etcd=etcd_endpoints, prefix=prefix)
    assert status.returncode == 0, status.stderr
    for text in (status.stdout, status.stderr):
        assert "\x1b" not in text and "\x07" not in text and "\r" not in text, repr(text)
    assert "failed: instance 1 on n9: boom\\x1b[2J" in status.stderr, status.stderr
    assert "boom\\x1b[2J" in status.stdout and "[bold]x[/bold]" in status.stdout  # reason column, as text
    row = json.loads(run_bin("daprdockr", "svc", "status", str(WEB), "--json", etcd=etcd_endpoints,
                             prefix=prefix).stdout)
    assert row["reason"] == EVIL and row["rollout"] == "paused"  # JSON keeps the exact value

    # --wait follows the (unchanged) spec: its rollout is paused, so it stops at once, exit 6
    wait = run_bin("daprdockr", "svc", "set", str(WEB), "--wait", "--timeout", "20", etcd=etcd_endpoints,
                   prefix=prefix)
    assert wait.returncode == 6, wait.stderr
    assert "\x1b" not in wait.stderr and "\x07" not in wait.stderr and "\r" not in wait.stderr, repr(wait.stderr)
    assert "paused: boom\\x1b[2J" in wait.stderr
    wait = run_bin("daprdockr", "svc", "set", str(WEB), "--wait", "--json", "--timeout", "20",
                   etcd=etcd_endpoints, prefix=prefix)
    assert wait.returncode == 6, wait.stderr
    assert json.loads(wait.stdout)["env"] == {"V": "2"}
    *lines, error = wait.stderr.splitlines()
    progress = [json.loads(line) for line in lines]
    assert progress and progress[-1]["halted"] == f"paused: {EVIL}" and progress[-1]["reason"] == EVIL
    assert progress[-1]["failed"] == [f"instance 1 on n9: {EVIL}"] and progress[-1]["done"] is False
    assert error.startswith("daprdockr: ") and "\x1b" not in error
