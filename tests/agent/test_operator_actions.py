"""The API's actions (scale, rollback, restart one instance, drain, undrain) against two real
agents on one real Docker engine and a real etcd: refused without the token (403, nothing
changes), done with it; a restart is done by the owner, in place (a new start time), also when
asked of the other agent (forwarded)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.statedir import TOKEN_FILE, read_token
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState
from tests.agent.cluster import local_cluster, wait_for
from tests.support.procs import free_port

pytestmark = [pytest.mark.etcd, pytest.mark.docker]
WEB = ServiceName(group="myapp", service="web")
LOUD = ["sh", "-c", "while true; do echo line-$DAPRDOCKR_INSTANCE; sleep 0.2; done"]


def spec(image: str, instances: int) -> ServiceSpec:
    return ServiceSpec.from_dict({"image": image, "instances": instances, "cmd": LOUD}, name=WEB)


def running(state: ClusterState) -> dict[int, str]:
    return {r.number: r.node for r in state.instances_of(WEB) if r.state == "running"}


def started_at(container_id: str) -> tuple[datetime, str]:
    """``docker inspect``'s State.StartedAt (RFC 3339, nanoseconds cut to micro) and State.Running."""
    out = subprocess.run(["docker", "inspect", "-f", "{{.State.StartedAt}} {{.State.Running}}", container_id],
                         capture_output=True, text=True, check=True).stdout.split()
    stamp = re.sub(r"(\.\d{1,6})\d*", r"\1", out[0]).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp), out[1]


def apis(prefix_ips: list[str]) -> dict[str, tuple[str, int]]:
    return {ip: (ip, free_port(ip)) for ip in prefix_ips}


async def post(http: aiohttp.ClientSession, api: tuple[str, int], path: str, body: object, *,
               token: str | None, content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {token}"} if token is not None else {})}
    async with http.post(f"http://{api[0]}:{api[1]}{path}", data=json.dumps(body),
                         headers=headers) as resp:
        return resp.status, await resp.json()


async def test_actions_need_the_token_and_do_what_they_say(
    store: EtcdStore, etcd_endpoints: str, prefix: str, docker_image: str, tmp_path: Path
) -> None:
    listen = apis(["127.0.0.11", "127.0.0.12"])
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=2, node_prefix="ac",
                             per_node=lambda i, ip: {"api_listen": listen[ip]}):
        token = read_token(tmp_path / TOKEN_FILE)  # (both agents' state dir: one token)
        a1, a2 = listen["127.0.0.11"], listen["127.0.0.12"]
        versions = VersionStore(store)
        await asyncio.sleep(1.2)  # both settled: the instances spread
        await versions.put_service(spec(docker_image, 2))
        state = await wait_for(store, lambda s: len(running(s)) == 2 and len(set(running(s).values())) == 2)
        first = state.instances[(WEB, 1)].container_id
        first_started = started_at(first)
        async with aiohttp.ClientSession() as http:
            # refused: no token, a wrong one (also on loopback); nothing changes
            for given in (None, "wrong"):
                status, body = await post(http, a1, "/v1/services/myapp/web/scale", {"instances": 5}, token=given)
                assert status == 403 and "token" in body["error"]
                status, _ = await post(http, a1, "/v1/nodes/ac2/drain", {}, token=given)
                assert status == 403
                status, _ = await post(http, a1, "/v1/services/myapp/web/instances/1/restart", {}, token=given)
                assert status == 403
            stored = await versions.get_service(WEB)
            assert stored is not None and stored.instances == 2
            assert await store.get_kv(store.schema.drain("ac2")) is None
            history = await versions.history(WEB)
            assert [e.version for e in history] == [1]
            assert started_at(first) == first_started  # not restarted
            # bad requests: 415, 400, 404
            status, _ = await post(http, a1, "/v1/services/myapp/web/scale", {"instances": 3}, token=token,
                                   content_type="text/plain")
            assert status == 415
            for bad in ({"instances": -1}, {"instances": "3"}, {"instances": True}, [3]):
                status, body = await post(http, a1, "/v1/services/myapp/web/scale", bad, token=token)
                assert status == 400, (bad, body)
            status, body = await post(http, a1, "/v1/services/myapp/nope/scale", {"instances": 1}, token=token)
            assert status == 404 and "not found" in body["error"]
            status, _ = await post(http, a1, "/v1/nodes/ghost/drain", {}, token=token)
            assert status == 404
            status, _ = await post(http, a1, "/v1/services/myapp/web/instances/9/restart", {}, token=token)
            assert status == 404
            assert (await versions.get_service(WEB)).instances == 2  # type: ignore[union-attr]

            # scale: the spec in etcd changes, as a new version
            status, body = await post(http, a2, "/v1/services/myapp/web/scale", {"instances": 3}, token=token)
            assert status == 200, body
            assert body == {"ok": True, "service": "web.myapp", "instances": 3, "version": 2}
            assert (await versions.get_service(WEB)).instances == 3  # type: ignore[union-attr]
            assert (await versions.history(WEB))[-1].cause == "scale"
            await wait_for(store, lambda s: len(running(s)) == 3)

            # rollback: the version before is written again (as version 3)
            status, body = await post(http, a1, "/v1/services/myapp/web/rollback", {}, token=token)
            assert status == 200, body
            assert body["to_version"] == 1 and body["version"] == 3 and body["instances"] == 2
            assert (await versions.get_service(WEB)).instances == 2  # type: ignore[union-attr]
            assert (await versions.history(WEB))[-1].cause == "rollback to 1"
            status, body = await post(http, a1, "/v1/services/myapp/web/rollback", {"to": 99}, token=token)
            assert status == 404, body

            # drain / undrain: the drain key is written, then deleted
            status, body = await post(http, a1, "/v1/nodes/ac2/drain", {}, token=token)
            assert (status, body) == (200, {"ok": True, "node": "ac2", "state": "draining"})
            assert await store.get_kv(store.schema.drain("ac2")) is not None
            status, body = await post(http, a2, "/v1/nodes/ac2/undrain", {}, token=token)
            assert (status, body) == (200, {"ok": True, "node": "ac2", "state": "ready"})
            assert await store.get_kv(store.schema.drain("ac2")) is None


async def test_restart_one_instance_in_place_also_through_the_other_agent(
    store: EtcdStore, etcd_endpoints: str, prefix: str, docker_image: str, tmp_path: Path
) -> None:
    listen = apis(["127.0.0.11", "127.0.0.12"])
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=2, node_prefix="rs",
                             per_node=lambda i, ip: {"api_listen": listen[ip]}):
        token = read_token(tmp_path / TOKEN_FILE)
        by_node = {"rs1": listen["127.0.0.11"], "rs2": listen["127.0.0.12"]}
        await asyncio.sleep(1.2)
        await VersionStore(store).put_service(spec(docker_image, 2))
        state = await wait_for(store, lambda s: len(running(s)) == 2 and len(set(running(s).values())) == 2)
        before = {n: state.instances[(WEB, n)] for n in (1, 2)}
        started = {n: started_at(r.container_id) for n, r in before.items()}
        assert all(s[1] == "true" for s in started.values())
        async with aiohttp.ClientSession() as http:
            for n, rec in before.items():
                owner = by_node[rec.node]
                other = next(api for node, api in by_node.items() if node != rec.node)
                via = owner if n == 1 else other  # instance 2: asked of the agent that does not run it
                t0 = time.monotonic()
                status, body = await post(http, via, f"/v1/services/myapp/web/instances/{n}/restart", {}, token=token)
                print(f"restart of instance {n} via {'owner' if via == owner else 'the other agent'}: "
                      f"{time.monotonic() - t0:.2f}s {body}")
                assert status == 200, body
                assert body["node"] == rec.node and body["instance"] == n
                assert rec.container_id.startswith(body["container_id"])
        for n, rec in before.items():
            now_started, now_running = started_at(rec.container_id)
            assert now_started > started[n][0] and now_running == "true", (n, started[n], now_started)
        # the reconciler did not fight it: the same containers run, the records say running
        await asyncio.sleep(2.5)
        state = await wait_for(store, lambda s: len(running(s)) == 2, timeout=10)
        assert {n: state.instances[(WEB, n)].container_id for n in (1, 2)} == {
            n: r.container_id for n, r in before.items()}
        out = subprocess.run(["docker", "ps", "-q", "--filter", "label=daprdockr.service=web",
                              "--filter", f"label=daprdockr.node={before[1].node}"], capture_output=True,
                             text=True, check=True).stdout.split()
        assert out == [before[1].container_id[:12]]
