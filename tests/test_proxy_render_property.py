"""Property test against real nginx: whatever specs and records are thrown at the agent (valid
or hostile), nginx's routing table holds exactly the intended host names, and nothing else."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daprdockr.core.keys import KeySchema
from daprdockr.core.model import InstanceRecord, ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState, RawKV, decode_state
from daprdockr.errors import ValidationError
from daprdockr.proxy import NginxManager
from tests.conftest import missing
from tests.support.procs import free_port

pytestmark = pytest.mark.nginx
LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
GOOD_HOST = st.lists(LABEL, min_size=1, max_size=3).map(lambda labels: ".".join([*labels, "test"]))
HOSTILE = st.sampled_from(["x\n.com", "a.com;", "a.com }", "a b.com", "*.com", ".com", "a.com\n", "~^.*$",
                           'a"b.com', "a.com#", "x\r\nset evil.com 1.2.3.4:1", "é.com", "a..com", "a.com:80", "$host"])
HOST = st.one_of(GOOD_HOST, HOSTILE, st.text(max_size=20))
ADDRESS = st.one_of(st.sampled_from(["127.0.0.11", "127.0.0.12", "::1"]),
                    st.sampled_from(["1.2.3.4; evil", "not-an-ip", "127.0.0.1\n", "", "[::1]"]))


@pytest.fixture
async def nginx(tmp_path: Path) -> AsyncIterator[NginxManager]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        missing("nginx")
    m = NginxManager(state_dir=tmp_path / "nginx", listen=("127.0.0.21", free_port("127.0.0.21")), binary=binary)
    await m.start()
    yield m
    await m.stop()


def _state(services: list[tuple[str, str, str, list[str]]]) -> tuple[ClusterState, set[str]]:
    schema = KeySchema("/p")
    kvs, instances = [], {}
    for i, (group, service, host, addresses) in enumerate(services):
        name = ServiceName(group=group, service=service)
        body = json.dumps({"image": "x", "http_host": host, "http_port": 8080}).encode()
        kvs.append(RawKV(key=schema.service(name), value=body, mod_revision=i + 2))
        for n, address in enumerate(addresses, start=1):
            instances[(name, n)] = InstanceRecord(service=name, number=n, node=f"n{n}", address=address,
                                                  state="running", ports=(("8080/tcp", 30000 + n),))
    decoded = decode_state(schema, kvs)
    wanted = {spec.http_host for spec in decoded.services.values() if spec.http_host is not None}
    return ClusterState(services=decoded.services, instances=instances), wanted


async def test_the_table_in_nginx_holds_exactly_the_valid_hosts(nginx: NginxManager) -> None:
    seen: list[int] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(services=st.lists(st.tuples(LABEL, LABEL, HOST, st.lists(ADDRESS, max_size=3)), max_size=5))
    def check(services: list[tuple[str, str, str, list[str]]]) -> None:
        state, wanted = _state(services)
        nginx.update(state)
        asyncio.run_coroutine_threadsafe(nginx.push_once(), loop).result(10)
        dump = asyncio.run_coroutine_threadsafe(_dump(nginx), loop).result(10)
        routes = {line.split()[1]: line.split()[2:] for line in dump.splitlines() if line.startswith("route ")}
        assert set(routes) == wanted, dump
        for peers in routes.values():
            assert all(p.replace("[::1]", "x").count(":") == 1 and "evil" not in p and "not-an-ip" not in p
                       for p in peers), peers
        seen.append(len(wanted))

    loop = asyncio.get_running_loop()
    await asyncio.to_thread(check)
    assert len(seen) >= 30 and max(seen) >= 2


async def _dump(m: NginxManager) -> str:
    async with m._client().get("http://nginx/routes") as resp:
        return await resp.text()


def test_hostile_hosts_are_refused_by_the_model() -> None:
    for host in ["x\n.com", "a.com;", "*.com", ".com", "a.com\n"]:
        with pytest.raises(ValidationError):
            ServiceSpec.from_dict({"image": "x", "http_host": host, "http_port": 80},
                                  name=ServiceName(group="g", service="s"))
