"""A full agent (containers + DNS + nginx + HTTP API) on real etcd, Docker and nginx."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.message
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from tests.agent.cluster import local_cluster, wait_for
from tests.support.procs import free_port

pytestmark = [pytest.mark.etcd, pytest.mark.docker, pytest.mark.nginx]
WEB = ServiceName(group="myapp", service="web")
CMD = ["sh", "-c", "echo hello-from-$DAPRDOCKR_INSTANCE; echo $DAPRDOCKR_INSTANCE > /www/id; "
       "exec httpd -f -p 8080 -h /www"]


async def test_agent_serves_dns_http_api_and_metrics(
    store: EtcdStore, etcd_endpoints: str, prefix: str, docker_image: str, tmp_path: Path
) -> None:
    ports = {ip: (free_port(ip), free_port(ip), free_port(ip)) for ip in ("127.0.0.11", "127.0.0.12")}
    async with local_cluster(
        etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=2,
        per_node=lambda i, ip: {"dns_listen": (ip, ports[ip][0]), "http_listen": (ip, ports[ip][1]),
                                "api_listen": (ip, ports[ip][2]), "dns_upstreams": (("127.0.0.1", 9),),
                                "dns_workers": 1 if i == 0 else 0},  # n1: its own server + 1 worker
    ) as agents:
        await asyncio.sleep(1.0)
        await VersionStore(store).put_service(ServiceSpec.from_dict(
            {"image": docker_image, "instances": 4, "http_host": "web.example.com", "http_port": 8080,
             "cmd": CMD}, name=WEB))
        state = await wait_for(store, lambda s: sum(r.state == "running" for r in s.instances.values()) == 4)
        owner = {r.number: r.address for r in state.instances_of(WEB)}

        async with aiohttp.ClientSession() as http:
            for ip, (dns_port, http_port, api_port) in ports.items():
                # DNS: each agent answers for every instance, with the owner's address (20 source
                # ports, so on n1 the kernel spreads them over the agent and its DNS worker)
                q = dns.message.make_query("1.web.myapp.container", "A")
                for _ in range(20):
                    r = await dns.asyncquery.udp(q, ip, port=dns_port, timeout=2)
                    assert [rd.address for rd in r.answer[0]] == [owner[1]]
                # nginx: every agent's nginx reaches all 4 instances (once its debounced reload ran)
                seen = set()
                deadline = asyncio.get_running_loop().time() + 5.0
                while len(seen) < 4 and asyncio.get_running_loop().time() < deadline:
                    async with http.get(f"http://{ip}:{http_port}/id", headers={"Host": "web.example.com"}) as resp:
                        if resp.status == 200:
                            seen.add((await resp.text()).strip())
                    await asyncio.sleep(0.01)
                assert seen == {"1", "2", "3", "4"}
                # API
                async with http.get(f"http://{ip}:{api_port}/healthz") as resp:
                    health = await resp.json()
                    assert resp.status == 200 and health["status"] == "ok", health
                    assert set(health["checks"]) == {"etcd", "docker", "tasks", "nginx", "dns", "etcd_data",
                                                     "etcd_space"}
                async with http.get(f"http://{ip}:{api_port}/v1/status") as resp:
                    status = await resp.json()
                    assert len(status["instances"]) == 2 and status["services"][0]["running"] == 4
                for _ in range(30):  # n1's DNS worker reports its counters about once a second
                    async with http.get(f"http://{ip}:{api_port}/metrics") as resp:
                        families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
                    if families["daprdockr_dns_queries"].samples[0].value >= 20:
                        break
                    await asyncio.sleep(0.1)
                running = {s.labels["state"]: s.value for s in families["daprdockr_cluster_instances"].samples}
                assert running["running"] == 4
                assert families["daprdockr_nodes_alive"].samples[0].value == 2
                assert families["daprdockr_dns_queries"].samples[0].value >= 20  # the 20 queries above
                assert families["daprdockr_dns_workers"].samples[0].value == (1 if ip == "127.0.0.11" else 0)
                assert families["daprdockr_nginx_table_updates"].samples[0].value >= 1
                assert families["daprdockr_nginx_routes"].samples[0].value == 1
                # the routing metrics exist (their values move in the zero-drop tests' removals)
                assert {"daprdockr_nginx_retries", "daprdockr_nginx_ejections",
                        "daprdockr_routing_revision_applied"} <= set(families)
                assert families["daprdockr_lease_healthy"].samples[0].value == 1

            # logs: from the owning agent, 409 with the owner from the other one, 404 unknown
            mine = next(r for r in state.instances_of(WEB) if r.node == "n1")
            theirs = next(r for r in state.instances_of(WEB) if r.node == "n2")
            api1 = f"http://127.0.0.11:{ports['127.0.0.11'][2]}"
            async with http.get(f"{api1}/v1/logs/myapp/web/{mine.number}") as resp:
                assert resp.status == 200 and f"hello-from-{mine.number}" in await resp.text()
            async with http.get(f"{api1}/v1/logs/myapp/web/{theirs.number}") as resp:
                body = await resp.json()
                assert resp.status == 409 and body["node"] == "n2"
                assert body["api"] == f"127.0.0.12:{ports['127.0.0.12'][2]}"
            async with http.get(f"{api1}/v1/logs/myapp/web/99") as resp:
                assert resp.status == 404

            # bad data in etcd is visible: /healthz, /v1/status and a metric name the bad keys
            bad_spec = store.schema.service(ServiceName(group="myapp", service="bad"))
            bad_instance = store.schema.instance(ServiceName(group="myapp", service="bad"), 1)
            await store.put_raw(bad_spec, b'{"image": "busybox", "instances": "2"}')
            await store.put_raw(bad_instance, b"{not json")
            await asyncio.sleep(0.5)
            async with http.get(f"{api1}/healthz") as resp:
                health = await resp.json()
                assert resp.status == 200 and health["status"] == "degraded", health  # not critical
                data = health["checks"]["etcd_data"]
                assert not data["ok"] and set(data["keys"]) == {bad_spec, bad_instance}, data
            async with http.get(f"{api1}/v1/status") as resp:
                assert set((await resp.json())["invalid_keys"]) == {bad_spec, bad_instance}
            async with http.get(f"{api1}/metrics") as resp:
                families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
            invalid = {s.labels["kind"]: s.value for s in families["daprdockr_invalid_keys"].samples}
            assert invalid == {"service": 1, "instance": 1, "other": 0}, invalid

            # a root task that is not running turns /healthz red and is named
            def crash() -> None:
                raise RuntimeError("health checks crash (injected)")

            agents[0].agent.health.check_due_once = crash  # type: ignore[method-assign]
            deadline = asyncio.get_running_loop().time() + 5
            while True:
                async with http.get(f"{api1}/healthz") as resp:
                    health = await resp.json()
                if resp.status == 503 or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert resp.status == 503 and health["status"] == "degraded", health
            assert health["checks"]["tasks"]["not_running"] == ["health"], health["checks"]["tasks"]
        assert all(a.task is not None and not a.task.done() for a in agents)


async def test_an_agent_without_nginx_lua_says_so_before_joining_the_cluster(
    store: EtcdStore, etcd_endpoints: str, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The Lua module is checked before the agent registers: it exits (code 1) with one line
    naming the Debian package, and never shows up as a node (it used to register first, fail at
    nginx's start and leave its node record until the lease ran out)."""
    import logging

    from daprdockr.agent.main import Agent
    from tests.agent.cluster import agent_config

    config = agent_config(etcd=etcd_endpoints, prefix=prefix, node="nolua", ip="127.0.0.11", tmp=tmp_path,
                          http_listen=("127.0.0.11", free_port("127.0.0.11")), nginx_modules=(str(tmp_path),))
    with caplog.at_level(logging.ERROR, logger="daprdockr.agent.main"):
        code = await asyncio.wait_for(Agent(config).run(asyncio.Event()), 30)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == 1 and len(errors) == 1 and "libnginx-mod-http-lua" in errors[0], errors
    assert "nolua" not in (await store.snapshot()).nodes


async def test_a_shutdown_with_nothing_routed_waits_for_no_confirmation(
    store: EtcdStore, etcd_endpoints: str, prefix: str, docker_image: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture
) -> None:
    """The service was deleted before the agent stopped (as `make run` does): revoking the lease
    takes nothing out of any route, so no agent publishes a revision for it and none is waited
    for (it waited 2 s for itself: "vm had not applied it after 2.0s").  With an instance routed,
    the revoke is confirmed as before."""
    web = ServiceName(group="sd", service="web")
    spec = ServiceSpec.from_dict({"image": docker_image, "instances": 1, "http_port": 8080,
                                  "cmd": ["httpd", "-f", "-p", "8080"]}, name=web)
    with caplog.at_level(logging.INFO, logger="daprdockr.agent.routing_ack"):
        async with local_cluster(etcd=etcd_endpoints, prefix=prefix, tmp=tmp_path, nodes=1, node_prefix="sd") as agents:
            await VersionStore(store).put_service(spec)
            await wait_for(store, lambda s: any(r.routable for r in s.instances_of(web)), timeout=30)
            await VersionStore(store).delete_service(web)
            await wait_for(store, lambda s: not s.instances_of(web), timeout=30)
            await agents[0].shutdown()
    waits = [r.getMessage() for r in caplog.records if "removal at revision" in r.getMessage()]
    assert not any("had not applied" in w for w in waits), waits
