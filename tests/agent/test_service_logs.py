"""The merged log of a service (``GET /v1/logs/<g>/<s>``, ``daprdockr logs NAME``) against two real
agents on one real Docker engine: lines of every instance, local and remote, each prefixed with
its number, and new lines while following."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.agent.service_logs import LINE_LIMIT, split_lines
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState
from tests.agent.cluster import local_cluster, wait_for
from tests.support.procs import free_port

WEB = ServiceName(group="myapp", service="web")
# a counter per instance: "line-<n>-<i>", one every 0.2 s
LOUD = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo line-$DAPRDOCKR_INSTANCE-$i; sleep 0.2; done"]


@pytest.mark.parametrize(("pending", "chunk", "lines", "rest"), [
    ("", "a\nb\n", ["a\n", "b\n"], ""),
    ("", "a\nb", ["a\n"], "b"),
    ("b", "c\n", ["bc\n"], ""),
    ("", "", [], ""),
    ("", "\n", ["\n"], ""),
    ("", "x" * (LINE_LIMIT + 3), ["x" * LINE_LIMIT + "\n"], "xxx"),
])
def test_split_lines(pending: str, chunk: str, lines: list[str], rest: str) -> None:
    assert split_lines(pending, chunk) == (lines, rest)


def spread(state: ClusterState) -> bool:
    """All 3 instances running, on both nodes."""
    running = [r for r in state.instances_of(WEB) if r.state == "running"]
    return len({r.node for r in running}) == 2 and len(running) == 3


@pytest.mark.etcd
@pytest.mark.docker
async def test_merged_log_of_every_instance_follows_new_lines(
    store: EtcdStore, etcd_endpoints: str, prefix: str, docker_image: str, tmp_path: Path
) -> None:
    listen = {ip: (ip, free_port(ip)) for ip in ("127.0.0.11", "127.0.0.12")}
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=2, node_prefix="ml",
                             per_node=lambda i, ip: {"api_listen": listen[ip]}):
        await asyncio.sleep(1.2)
        await VersionStore(store).put_service(
            ServiceSpec.from_dict({"image": docker_image, "instances": 3, "cmd": LOUD}, name=WEB))
        state = await wait_for(store, spread)
        a1 = listen["127.0.0.11"]
        print({r.number: r.node for r in state.instances_of(WEB)})
        async with aiohttp.ClientSession() as http:
            for _ in range(50):  # until each has written 2 lines (one every 0.2 s)
                async with http.get(f"http://{a1[0]}:{a1[1]}/v1/logs/myapp/web", params={"tail": "2"}) as resp:
                    assert resp.status == 200
                    text = await resp.text()
                lines = text.splitlines()
                if len(lines) == 6:
                    break
                await asyncio.sleep(0.2)
            assert len(lines) == 6, text
            for n in (1, 2, 3):
                mine = [line for line in lines if line.startswith(f"[{n}] ")]
                assert len(mine) == 2 and all(re.fullmatch(rf"\[{n}\] line-{n}-\d+", m) for m in mine), text

            # ?instance=N: one instance's log, from whichever node runs it (here one on the other node)
            remote = next(r.number for r in state.instances_of(WEB) if r.node != "ml1")
            async with http.get(f"http://{a1[0]}:{a1[1]}/v1/logs/myapp/web",
                                params={"tail": "2", "instance": str(remote)}) as resp:
                assert resp.status == 200
                one = (await resp.text()).splitlines()
            assert len(one) == 2 and all(line.startswith(f"[{remote}] line-{remote}-") for line in one), one

            # following: new lines of every instance arrive, numbered as they go
            seen: dict[int, list[int]] = {1: [], 2: [], 3: []}
            async with http.get(f"http://{a1[0]}:{a1[1]}/v1/logs/myapp/web",
                                params={"tail": "0", "follow": "1"}) as resp:
                assert resp.status == 200
                deadline = time.monotonic() + 3.0
                while time.monotonic() < deadline:
                    raw = await asyncio.wait_for(resp.content.readline(), 5)
                    m = re.fullmatch(rb"\[(\d)\] line-(\d)-(\d+)\n", raw)
                    assert m is not None and m[1] == m[2], raw
                    seen[int(m[1])].append(int(m[3]))
            print({n: (len(v), v[:1], v[-1:]) for n, v in seen.items()})
            assert all(len(v) >= 5 and v == sorted(v) for v in seen.values()), seen
            await asyncio.sleep(0.3)  # the stream's sources end with the client

        # the CLI: `logs NAME` without -n is the merged log, through an agent on this host
        cli = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "daprdockr", "--etcd", etcd_endpoints, "--prefix", prefix,
                             "logs", "web.myapp", "--tail", "1"], capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert sorted(line.split()[0] for line in cli.stdout.splitlines()) == ["[1]", "[2]", "[3]"], cli.stdout
        unknown = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "daprdockr", "--etcd", etcd_endpoints, "--prefix", prefix,
                             "logs", "nope.myapp"], capture_output=True, text=True, timeout=60)
        assert unknown.returncode != 0 and "no instances" in unknown.stderr


@pytest.mark.etcd
@pytest.mark.docker
async def test_a_source_that_fails_shows_one_line_and_the_others_go_on(
    etcd_endpoints: str, prefix: str, docker_image: str, tmp_path: Path
) -> None:
    """Instance 1: this node's, without a container; 2: on a node whose API is not there; 3: a
    real container of this node (by its labels): its lines come, the others say why not."""
    from daprdockr.agent.api import AgentApi
    from daprdockr.agent.main import Agent
    from daprdockr.agent.operator_routes import operator_routes
    from daprdockr.agent.status import AgentStatus
    from daprdockr.core.containers import container_labels
    from daprdockr.core.jsondata import dumps
    from daprdockr.core.records import InstanceRecord, NodeRecord
    from daprdockr.core.state import RawKV
    from tests.agent.cluster import agent_config

    me, closed = "mf1", free_port("127.0.0.1")
    labels = container_labels(node_id=me, service=WEB, number=3, spec_hash="x")
    real = subprocess.run(["docker", "run", "-d", *(a for k, v in labels.items() for a in ("--label", f"{k}={v}")),
                           docker_image, "sh", "-c", "echo hello-3; sleep 60"],
                          capture_output=True, text=True, check=True).stdout.strip()
    listen = ("127.0.0.11", free_port("127.0.0.11"))
    agent = Agent(agent_config(etcd=etcd_endpoints, prefix=prefix, node=me, ip="127.0.0.11", tmp=tmp_path,
                               api_listen=listen))
    routes = operator_routes(agent, token="t" * 32)
    merged = routes[1].__self__  # type: ignore[attr-defined]  # (the ServiceLogs)
    api = AgentApi(view=AgentStatus(agent), logs=agent.runtime, listen=listen, routes=routes)
    await api.start()
    try:
        s = agent.schema
        records = [(s.node("gone"), NodeRecord(node_id="gone", address="127.0.0.1", api=f"127.0.0.1:{closed}"))]
        records += [(s.instance(WEB, n), InstanceRecord(service=WEB, number=n, node=node, address="127.0.0.1",
                                                        state="running"))
                    for n, node in ((1, me), (2, "gone"), (3, me))]
        agent.mirror.reset([RawKV(key=k, value=dumps(r.to_dict()), lease=7, create_revision=3, mod_revision=3)
                            for k, r in records], revision=3)
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://{listen[0]}:{listen[1]}/v1/logs/myapp/web") as resp:
            assert resp.status == 200
            lines = sorted((await asyncio.wait_for(resp.text(), 20)).splitlines())
        print(lines)
        assert len(lines) == 3, lines
        assert lines[0].startswith("[1] [daprdockr: ") and "no container" in lines[0]
        assert lines[1].startswith("[2] [daprdockr: agent API 127.0.0.1:") and str(closed) in lines[1]
        assert lines[2] == "[3] hello-3"
        # following a quiet service: the stream ends within a second of the client going
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://{listen[0]}:{listen[1]}/v1/logs/myapp/web", params={"follow": "1"}) as resp:
            assert resp.status == 200
            while b"hello-3" not in await asyncio.wait_for(resp.content.readline(), 10):
                pass
            assert merged.streams == 1
        deadline = time.monotonic() + 3
        while merged.streams and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert merged.streams == 0
    finally:
        await api.stop()
        await agent.runtime.close()
        await agent.store.close()
        subprocess.run(["docker", "rm", "-f", real], capture_output=True)
