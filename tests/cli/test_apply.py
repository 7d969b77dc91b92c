"""``daprdockr apply / plan / export`` against a real etcd: a directory of 50 services applied,
re-applied (etcd's revision does not move), one document edited (only that service's history
grows), pruned; a bad document among good ones writes nothing; a concurrent ``svc set`` between
the plan and the write refuses that service only; ``export | apply --dry-run`` changes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.cli.apply import run_apply
from daprdockr.clikit.specfile import load_spec_docs, validate_docs
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.names import ServiceName

pytestmark = pytest.mark.etcd
IMG = "daprdockr-test/busybox:latest"
T = TypeVar("T")


def on_store(etcd: str, prefix: str, fn: Callable[[EtcdStore], Awaitable[T]]) -> T:
    async def main() -> T:
        async with EtcdStore(endpoints=parse_endpoints(etcd), schema=KeySchema(prefix)) as store:
            return await fn(store)

    return asyncio.run(main())


async def _revision(store: EtcdStore) -> int:
    return (await store.read_prefix(store.schema.root))[1]


async def _histories(store: EtcdStore) -> dict[str, list[str]]:
    """service -> the values of its history keys (every entry, in version order)."""
    kvs, _ = await store.read_prefix(store.schema.prefix + "/history/")
    out: dict[str, list[str]] = {}
    for kv in sorted(kvs, key=lambda kv: kv.key):
        group, service, _version = kv.key.rsplit("/", 3)[1:]
        out.setdefault(f"{service}.{group}", []).append(kv.value.decode())
    return out


async def _specs(store: EtcdStore) -> dict[str, dict[str, Any]]:
    state = await store.snapshot()
    return {str(name): spec.to_dict() for name, spec in state.services.items()}


def service_doc(i: int, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": f"s{i:02d}.myapp", "image": IMG, "instances": i % 4, "cmd": ["httpd", "-f"],
                           "env": {"N": str(i)}}
    if i % 5 == 0:
        doc.update(http_host=f"s{i}.example.com", http_port=8080, health={"http": "/", "port": 8080})
    doc.update(extra)
    return doc


def yaml_docs(docs: list[dict[str, Any]]) -> str:
    import yaml

    return yaml.safe_dump_all(docs, sort_keys=False)


def write_fifty(path: Path) -> Path:
    """50 services: nine YAML files of five documents, one JSON file (a list of five), and a
    file of another suffix that is not read."""
    path.mkdir(exist_ok=True)
    for f in range(9):
        (path / f"part-{f}.yaml").write_text(yaml_docs([service_doc(f * 5 + k) for k in range(5)]))
    (path / "part-9.json").write_text(json.dumps([service_doc(45 + k) for k in range(5)]))
    (path / "README.txt").write_text("not a spec")
    return path


def test_directory_of_fifty_applied_reapplied_edited_pruned(cli, etcd_endpoints: str, prefix: str,  # type: ignore[no-untyped-def]
                                                           tmp_path: Path) -> None:
    def store(fn: Callable[[EtcdStore], Awaitable[T]]) -> T:
        return on_store(etcd_endpoints, prefix, fn)

    specs_dir = write_fifty(tmp_path / "specs")
    assert cli("svc", "set", "old.myapp", "--image", IMG).exit_code == 0  # pruned later
    assert cli("svc", "set", "keep.other", "--image", IMG).exit_code == 0  # another group: never pruned

    # plan: 50 to create, exit 2, nothing written
    before = store(_revision)
    plan = cli("plan", "-f", str(specs_dir))
    assert plan.exit_code == 2, plan.output
    assert plan.stdout.count(": created (") == 50 and "old.myapp" not in plan.stdout
    assert "plan: 50 created, 0 scaled, 0 replaced, 0 deleted, 0 unchanged (dry run: nothing written)" in plan.stdout
    assert cli("apply", "-f", str(specs_dir), "--dry-run").exit_code == 2
    assert store(_revision) == before

    applied = cli("apply", "-f", str(specs_dir))
    assert applied.exit_code == 0, applied.output
    assert "applied: 50 created" in applied.stdout
    specs = store(_specs)
    assert len(specs) == 52
    for i in range(50):
        want = validate_docs(load_spec_docs([str(specs_dir)]))[i].to_dict()
        assert specs[f"s{i:02d}.myapp"] == want
    histories = store(_histories)
    assert all(len(histories[f"s{i:02d}.myapp"]) == 1 for i in range(50))
    assert all(json.loads(histories[f"s{i:02d}.myapp"][0])["cause"] == "apply" for i in range(50))

    # re-applied: nothing written at all
    settled = store(_revision)
    again = cli("apply", "-f", str(specs_dir))
    assert again.exit_code == 0, again.output
    assert "applied: 0 created, 0 scaled, 0 replaced, 0 deleted, 50 unchanged" in again.stdout
    assert store(_revision) == settled
    assert cli("plan", "-f", str(specs_dir)).exit_code == 0
    assert store(_histories) == histories

    # one document edited: one transaction, only that service's history grows
    part = specs_dir / "part-3.yaml"
    docs = [service_doc(15 + k) for k in range(5)]
    docs[2] = service_doc(17, image="daprdockr-test/busybox:other", env={"N": "17", "EXTRA": "1"})
    part.write_text(yaml_docs(docs))
    plan = cli("plan", "-f", str(specs_dir))
    assert plan.exit_code == 2 and "s17.myapp: replaced (env, image)" in plan.stdout
    assert "49 unchanged" in plan.stdout
    edited = cli("apply", "-f", str(specs_dir))
    assert edited.exit_code == 0, edited.output
    assert store(_revision) == settled + 1
    grown = store(_histories)
    assert len(grown["s17.myapp"]) == 2 and json.loads(grown["s17.myapp"][1])["spec"]["image"].endswith(":other")
    assert {k: v for k, v in grown.items() if k != "s17.myapp"} == {k: v for k, v in histories.items()
                                                                     if k != "s17.myapp"}
    # scaled only: reported as such
    docs[2] = {**docs[2], "instances": 3}
    part.write_text(yaml_docs(docs))
    scaled = cli("apply", "-f", str(specs_dir), "--json")
    assert scaled.exit_code == 0, scaled.output
    changed = [c for c in json.loads(scaled.stdout)["changes"] if c["change"] != "unchanged"]
    assert changed == [{"service": "s17.myapp", "change": "scaled", "fields": ["instances"], "from": 1, "to": 3}]

    # prune: refused without a group; with --group only that group's unnamed services go
    refused = cli("apply", "-f", str(specs_dir), "--prune")
    assert refused.exit_code == 2 and "--group" in refused.stderr
    before_prune = store(_revision)
    plan = cli("plan", "-f", str(specs_dir), "--prune", "--group", "myapp")
    assert plan.exit_code == 2 and "old.myapp: deleted" in plan.stdout and "keep.other" not in plan.stdout
    assert store(_revision) == before_prune
    pruned = cli("apply", "-f", str(specs_dir), "--prune", "--group", "myapp")
    assert pruned.exit_code == 0, pruned.output
    assert "applied: 0 created, 0 scaled, 0 replaced, 1 deleted, 50 unchanged" in pruned.stdout
    assert set(store(_specs)) == {f"s{i:02d}.myapp" for i in range(50)} | {"keep.other"}
    assert cli("plan", "-f", str(specs_dir), "--prune", "--group", "myapp").exit_code == 0


@pytest.mark.parametrize(("name", "text", "needles"), [
    ("bad-field", yaml_docs([service_doc(60), service_doc(61), service_doc(62, instances=-1)]),
     ["part-4b.yaml: document 3 (s62.myapp): instances: -1 is outside"]),
    ("unknown-field", yaml_docs([service_doc(60), service_doc(61, imagee="x")]),
     ["part-4b.yaml: document 2 (s61.myapp)", "imagee"]),
    ("bad-name", yaml_docs([service_doc(60, name="Bad_Name.myapp")]), ["part-4b.yaml: document 1", "name"]),
    ("no-name", yaml_docs([{"image": IMG}]), ["part-4b.yaml: document 1: name: is required"]),
    ("name-twice", yaml_docs([service_doc(60), service_doc(7)]),
     ["part-4b.yaml: document 2: name: s07.myapp is also named in", "part-1.yaml: document 3"]),
    ("bad-yaml", "name: s60.myapp\nimage: [unclosed\n", ["part-4b.yaml: invalid YAML at line"]),
    ("not-a-mapping", "---\nname: s60.myapp\nimage: x\n---\n- a list\n",
     ["part-4b.yaml: document 2 must be a mapping"]),
])
def test_a_bad_document_among_good_ones_writes_nothing(cli, etcd_endpoints: str, prefix: str,  # type: ignore[no-untyped-def]
                                                       tmp_path: Path, name: str, text: str,
                                                       needles: list[str]) -> None:
    specs_dir = write_fifty(tmp_path / "specs")
    (specs_dir / "part-4b.yaml").write_text(text)  # sorted between part-4 and part-5: good ones on both sides
    assert cli("svc", "set", "old.myapp", "--image", IMG).exit_code == 0
    before = on_store(etcd_endpoints, prefix, _revision)
    for args in (["apply", "-f", str(specs_dir)], ["apply", "-f", str(specs_dir), "--prune", "--group", "myapp"],
                 ["plan", "-f", str(specs_dir)]):
        r = cli(*args)
        # (an invalid file is 2 for apply, as every invalid input; 1 for a plan, whose 2 says "changes")
        assert r.exit_code == (1 if args[0] == "plan" else 2), (args, r.output)
        for needle in needles:
            assert needle in r.stderr, (needle, r.stderr)
        assert r.stdout == ""
    assert on_store(etcd_endpoints, prefix, _revision) == before
    assert set(on_store(etcd_endpoints, prefix, _specs)) == {"old.myapp"}


async def test_a_concurrent_change_between_plan_and_write_refuses_that_service_only(
        store: EtcdStore, etcd_endpoints: str, prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = tmp_path / "v1.yaml"
    first.write_text(yaml_docs([service_doc(1), service_doc(2), service_doc(3), {"name": "old.myapp", "image": IMG}]))
    assert await run_apply(store, validate_docs(load_spec_docs([str(first)])), prune_group=None, dry_run=False) == 0
    capsys.readouterr()
    second = tmp_path / "v2.yaml"
    second.write_text(yaml_docs([service_doc(i, image="daprdockr-test/busybox:v2") for i in (1, 2, 3, 4)]))
    desired = validate_docs(load_spec_docs([str(second)]))
    env = {**os.environ, "DAPRDOCKR_ETCD": etcd_endpoints, "DAPRDOCKR_PREFIX": prefix}

    async def cli(*args: str) -> None:  # the real command, as another operator would run it
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "daprdockr", *args, env=env)
        assert await proc.wait() == 0, args

    async def meanwhile() -> None:  # after the plan was read, before the first write
        await cli("svc", "set", "s02.myapp", "--instances", "7")  # a replace planned from the old spec
        await cli("svc", "set", "s04.myapp", "--image", IMG)  # a create planned on an absent key
        await cli("svc", "del", "old.myapp")  # a delete planned on a key that is gone now

    histories = await _histories(store)
    code = await run_apply(store, desired, prune_group="myapp", dry_run=False, before_write=meanwhile)
    out, err = capsys.readouterr()
    assert code == 1
    for name in ("s02.myapp", "s04.myapp", "old.myapp"):
        assert f"daprdockr: {name}: changed by someone else since the plan was read" in err
        assert f"{name}:" not in out
    assert "s01.myapp: replaced (image)" in out and "s03.myapp: replaced (image)" in out
    specs = await _specs(store)
    assert specs["s01.myapp"]["image"] == specs["s03.myapp"]["image"] == "daprdockr-test/busybox:v2"
    assert (specs["s02.myapp"]["image"], specs["s02.myapp"]["instances"]) == (IMG, 7)  # svc set's, none of ours
    assert specs["s04.myapp"]["image"] == IMG and "old.myapp" not in specs
    after = await _histories(store)
    assert len(after["s02.myapp"]) == len(histories["s02.myapp"]) + 1  # svc set's version only
    assert [json.loads(v)["cause"] for v in after["s04.myapp"]] == ["set"]
    assert len(after["s01.myapp"]) == 2 and json.loads(after["s01.myapp"][1])["cause"] == "apply"
    # the next plan shows what is left to do
    again = await run_apply(store, desired, prune_group="myapp", dry_run=True)
    out, _ = capsys.readouterr()
    assert again == 2 and "s02.myapp: replaced (image, instances), instances 7 -> 2" in out
    assert "s04.myapp: replaced (cmd, env, image, instances), instances 1 -> 0" in out and "old.myapp" not in out


def test_export_piped_into_a_dry_run_shows_no_change(cli, etcd_endpoints: str, prefix: str,  # type: ignore[no-untyped-def]
                                                    tmp_path: Path) -> None:
    rich = {"name": "full.myapp", "image": IMG, "instances": 2, "cmd": ["sh", "-c", "echo 'yes: no'"],
            "env": {"A": "1", "B": "on", "EMPTY": ""}, "labels": {"team": "x"}, "ports": [53, "54/udp"],
            "http_host": "full.example.com", "http_port": 8080,
            "health": {"http": "/healthz", "port": 8080, "interval": "3s"},
            "update": {"parallel": 2, "order": "stop-first"}, "stop_timeout": "20s", "stop_signal": "SIGINT",
            "proxy": {"balancer": "round-robin"}, "pause_limit": "5m", "rebalance": False, "memory": "64m",
            "cpus": 0.5, "volumes": ["data:/data"], "user": "1000:1000", "workdir": "/tmp"}
    docs = [rich, service_doc(1), {"name": "x.other", "image": IMG, "instances": 0}]
    (tmp_path / "in.yaml").write_text(yaml_docs(docs))
    assert cli("apply", "-f", str(tmp_path / "in.yaml")).exit_code == 0
    before = on_store(etcd_endpoints, prefix, _revision)
    for fmt in ("yaml", "json"):
        exported = cli("export", "--format", fmt)
        assert exported.exit_code == 0, exported.output
        plan = cli("apply", "-f", "-", "--dry-run", input=exported.stdout)
        assert plan.exit_code == 0, plan.output
        assert "plan: 0 created, 0 scaled, 0 replaced, 0 deleted, 3 unchanged" in plan.stdout
        assert cli("plan", "-f", "-", "--prune", "--group", "myapp", input=exported.stdout).exit_code == 0
    group = cli("export", "--group", "other")
    assert group.exit_code == 0 and "x.other" in group.stdout and "myapp" not in group.stdout
    # a group's export applied with --prune keeps the other groups; an edited one shows the change
    edited = cli("export", "--group", "myapp").stdout.replace("instances: 2", "instances: 5")
    plan = cli("plan", "-f", "-", "--prune", "--group", "myapp", input=edited)
    assert plan.exit_code == 2 and "full.myapp: scaled 2 -> 5" in plan.stdout
    assert on_store(etcd_endpoints, prefix, _revision) == before


def test_export_leaves_out_an_invalid_stored_spec_and_says_so(cli, etcd_endpoints: str, prefix: str) -> None:  # type: ignore[no-untyped-def]
    assert cli("svc", "set", "good.myapp", "--image", IMG).exit_code == 0
    on_store(etcd_endpoints, prefix, lambda s: s.put_raw(s.schema.service(ServiceName.parse("bad.myapp")), b"{"))
    r = cli("export")
    assert r.exit_code == 1 and "good.myapp" in r.stdout and "bad.myapp" not in r.stdout
    assert "bad.myapp left out: its stored spec is invalid" in r.stderr
    # applying a whole spec over it replaces it (the plan says the stored one is invalid)
    fixed = cli("apply", "-f", "-", input=yaml_docs([{"name": "bad.myapp", "image": IMG}]))
    assert fixed.exit_code == 0 and "bad.myapp: replaced (the stored spec is invalid:" in fixed.stdout
    assert cli("export").exit_code == 0


@pytest.mark.parametrize(("args", "needle"), [
    (["apply", "-f", "DIR", "--prune"], "--prune: needs --group G"),
    (["apply", "-f", "DIR", "--group", "myapp"], "--group: names the group --prune deletes from"),
    (["apply", "-f", "DIR", "--prune", "--group", "Bad_Group"], "--group: 'Bad_Group' is not a DNS label"),
    (["apply", "-f", "DIR", "--dry-run", "--wait"], "--wait: nothing is written with --dry-run"),
    (["plan", "-f", "DIR", "--prune"], "--prune: needs --group G"),
    (["plan", "-f", "MISSING"], "MISSING: No such file or directory"),
    (["plan", "-f", "DIR", "--no-such-option"], "No such option"),
    (["apply", "-f", "DIR", "--dry-run", "--no-such-option"], "No such option"),
    (["apply", "-f", "EMPTY"], "no *.yaml, *.yml, *.json file in the directory"),
    (["apply", "-f", "MISSING"], "MISSING: No such file or directory"),
    (["export", "--format", "xml"], "--format: 'xml' is not yaml or json"),
])
def test_refused_options_write_nothing(cli, etcd_endpoints: str, prefix: str, tmp_path: Path,  # type: ignore[no-untyped-def]
                                       args: list[str], needle: str) -> None:
    specs_dir = write_fifty(tmp_path / "specs")
    (tmp_path / "empty").mkdir()
    paths = {"DIR": str(specs_dir), "EMPTY": str(tmp_path / "empty"), "MISSING": str(tmp_path / "MISSING")}
    before = on_store(etcd_endpoints, prefix, _revision)
    r = cli(*[paths.get(a, a) for a in args])
    dry_run = args[0] == "plan" or "--dry-run" in args  # (a plan's 2 says "changes": its errors are 1)
    assert r.exit_code == (1 if dry_run else 2) and needle in r.stderr, r.output
    assert on_store(etcd_endpoints, prefix, _revision) == before
