"""Bad data in etcd is never a reason to stop anything (real etcd, real Docker, in-process agent).

* a spec that fails to parse, written over a running service, freezes that service as it is;
* a malformed value over one of the agent's own instance keys (on its lease, or with no lease)
  never removes the healthy container and drives no hot loop; a key bound to no lease is deleted
  (compare on its revision) and the container re-adopted;
* a spec with 16 000 ports cannot stall the event loop past the lease TTL.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.state import ClusterState
from tests.agent.cluster import local_cluster, wait_for
from tests.agent.test_agent_docker import WEB, docker_ids, running, web

pytestmark = [pytest.mark.etcd, pytest.mark.docker, pytest.mark.slow]


def _spec_key(store: EtcdStore) -> str:
    return store.schema.service(WEB)


def _good_spec_json(image: str, instances: int) -> dict[str, object]:
    return web(image, instances).to_dict()


@pytest.mark.parametrize(
    "garbage",
    ["unknown-field", "instances-as-string", "truncated", "too-many-ports"],
)
async def test_bad_spec_over_a_running_service_freezes_it(
    store: EtcdStore, etcd_endpoints: str, prefix: str, docker_image: str, tmp_path: Path, garbage: str
) -> None:
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=1, node_prefix="b") as agents:
        agent = agents[0].agent
        await VersionStore(store).put_service(web(docker_image, 2))
        await wait_for(store, lambda s: running(s) == [1, 2])
        ids = docker_ids("b1")
        good = _good_spec_json(docker_image, 2)
        value = {
            "unknown-field": json.dumps({**good, "replicas": 9}).encode(),
            "instances-as-string": json.dumps({**good, "instances": "2"}).encode(),
            "truncated": json.dumps(good).encode()[:-7],
            "too-many-ports": json.dumps({**good, "ports": list(range(10000, 26000))}).encode(),
        }[garbage]
        await store.put_raw(_spec_key(store), value)
        # three lease TTLs: long enough for any wrong plan to have run, and for a stalled loop to lose its lease
        for _ in range(12):
            await asyncio.sleep(0.5)
            assert agent.heartbeat.healthy, "the agent lost its lease"
        assert docker_ids("b1") == ids, "a container was stopped or replaced because of a bad spec"
        state = await store.snapshot()
        assert running(state) == [1, 2], "instance keys were released"
        assert WEB in state.invalid_services
        # visible on the agent too, and a valid spec takes over again
        assert agent.mirror.state().invalid_services.keys() == {WEB}
        await VersionStore(store).put_service(web(docker_image, 1))
        await wait_for(store, lambda s: running(s) == [1] and not s.invalid_services, timeout=10)


async def _own_record(store: EtcdStore, number: int) -> tuple[int, str]:
    state = await store.snapshot()
    rec = state.instances[(WEB, number)]
    return rec.lease, rec.container_id


@pytest.mark.parametrize("variant", ["garbage-on-lease", "garbage-no-lease", "valid-no-lease", "names-another-node"])
async def test_bad_own_instance_key_never_removes_the_container(
    store: EtcdStore, etcd_endpoints: str, prefix: str, docker_image: str, tmp_path: Path, variant: str
) -> None:
    """Three agents, two instances: one agent's key of instance 2 is overwritten.  The container
    keeps running, the key comes back on its owner's lease, and no agent loops on it.

    ``valid-no-lease`` (its own record, on no lease): the owner rebinds the key to its lease; no
    agent deletes it (a delete would free the number for any node to claim, and then the owner's
    container would be stopped as held elsewhere).  ``names-another-node`` (a well-formed record
    naming node "ghost", on the owner's lease): the owner rewrites it; it used to obey it and stop
    its healthy container."""
    async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=3, node_prefix="k") as agents:
        await VersionStore(store).put_service(web(docker_image, 2))
        state = await wait_for(store, lambda s: running(s) == [1, 2])
        before = state.instances[(WEB, 2)]
        owner = next(a.agent for a in agents if a.config.node_id == before.node)
        nodes = [a.config.node_id for a in agents]
        ids = docker_ids(*nodes)
        key = store.schema.instance(WEB, 2)
        actions_before = [sum(a.agent.reconciler.actions_total.values()) for a in agents]
        if variant == "garbage-on-lease":
            await store.put_raw(key, b"{not json", lease=before.lease)
        elif variant == "garbage-no-lease":
            await store.put_raw(key, b"{not json")
        elif variant == "valid-no-lease":
            await store.put_raw(key, json.dumps(before.to_dict()).encode())
        else:
            await store.put_raw(key, json.dumps({**before.to_dict(), "node": "ghost"}).encode(), lease=before.lease)
        # repaired: instance 2 is running again on its owner's lease, on the same container
        state = await wait_for(
            store, lambda s: (WEB, 2) in s.instances and s.instances[(WEB, 2)].lease == before.lease
            and s.instances[(WEB, 2)].node == before.node and s.instances[(WEB, 2)].state == "running", timeout=10)
        await asyncio.sleep(2)
        assert docker_ids(*nodes) == ids, "the healthy container was removed"
        assert state.instances[(WEB, 2)].container_id == before.container_id
        if variant in ("valid-no-lease", "names-another-node"):
            assert state.instances[(WEB, 2)].create_revision == before.create_revision, \
                "the key was deleted and created again (the number was free for any node to claim)"
        actions = [sum(a.agent.reconciler.actions_total.values()) - b
                   for a, b in zip(agents, actions_before, strict=True)]
        print(f"{variant}: actions per agent after the bad write: {actions} (owner {owner.config.node_id})")
        assert sum(actions) <= 6, f"hot loop: {actions} actions"


@pytest.mark.parametrize(("ports", "reason"), [(65, "at most 64"), (16_000, "bytes, at most 65536")])
async def test_spec_with_too_many_ports_is_invalid_for_every_reader(
    store: EtcdStore, ports: int, reason: str
) -> None:
    big = {"image": "busybox", "instances": 1, "ports": list(range(10000, 10000 + ports))}
    await store.put_raw(_spec_key(store), json.dumps(big).encode())
    t0 = time.perf_counter()
    state = await store.snapshot()
    took = time.perf_counter() - t0
    assert WEB not in state.services and WEB in state.invalid_services
    assert reason in state.invalid_services[WEB]
    print(f"snapshot with a {ports}-port spec took {took * 1000:.1f} ms")


async def test_an_agent_restarted_under_a_bad_spec_keeps_its_instances_and_its_route(
    store: EtcdStore, etcd_endpoints: str, prefix: str, docker_image: str, tmp_path: Path
) -> None:
    """A fresh agent has never seen a good version of the spec (the service is frozen for it): it
    still binds its running containers' keys to its new lease, so they do not expire and run twice,
    and its nginx keeps routing the service's host to them (the route of the newest stored version;
    it used to answer 404)."""
    from tests.agent.cluster import kill_spawned, remove_node_containers, spawn_agent
    from tests.support.procs import free_port

    http = ("127.0.0.11", free_port("127.0.0.11"))
    extra = ("--http-listen", f"{http[0]}:{http[1]}")

    async def get() -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.get(f"http://{http[0]}:{http[1]}/",
                                                       headers={"Host": "web.example.com"}) as r:
            return r.status, await r.text()

    proc = spawn_agent(etcd=etcd_endpoints, prefix=prefix, node="fz1", ip="127.0.0.11", state_dir=tmp_path,
                       extra=extra)
    try:
        await wait_for(store, lambda s: "fz1" in s.nodes, timeout=20)
        await VersionStore(store).put_service(web(docker_image, 2, http_host="web.example.com"))
        await wait_for(store, lambda s: running(s) == [1, 2])
        ids = docker_ids("fz1")
        state_before = await store.snapshot()
        await store.put_raw(_spec_key(store), b'{"image": "busybox", "instances": "2"}')
        proc.kill()
        proc.wait()
        killed = time.monotonic()
        proc = spawn_agent(etcd=etcd_endpoints, prefix=prefix, node="fz1", ip="127.0.0.11", state_dir=tmp_path,
                           extra=extra)
        old_lease = state_before.nodes["fz1"].lease

        def adopted(s: ClusterState) -> bool:  # registered anew, and its keys on the new lease
            node = s.nodes.get("fz1")
            return (node is not None and node.lease != old_lease and running(s) == [1, 2]
                    and all(r.lease == node.lease for r in s.instances_of(WEB)))

        await wait_for(store, adopted, timeout=30)
        await asyncio.sleep(max(0.0, killed + 6 - time.monotonic()))  # three TTLs: the old lease has expired
        state = await store.snapshot()
        node = state.nodes["fz1"]
        assert running(state) == [1, 2] and all(r.lease == node.lease for r in state.instances_of(WEB))
        assert docker_ids("fz1") == ids
        for _ in range(5):
            status, body = await get()
            assert status == 200 and "daprdockr test image" in body, (status, body)
    finally:
        kill_spawned(proc, state_dir=tmp_path, node="fz1")
        remove_node_containers(["fz1"])
