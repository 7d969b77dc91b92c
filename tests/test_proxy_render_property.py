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
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
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


ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def oracle_host(host: str) -> str | None:
    """The test's own idea of a routable host name (RFC 1123, written without the project's
    validators): lower-cased, one trailing dot dropped; None when it is not one."""
    h = host.lower()
    h = h[:-1] if h.endswith(".") else h
    labels = h.split(".")
    if not h or len(h) > 253 or labels[-1].isdigit():
        return None
    for label in labels:
        if not 1 <= len(label) <= 63 or not set(label) <= ALNUM | {"-"} or label[0] == "-" or label[-1] == "-":
            return None
    return h


def oracle_peer(address: str, port: int) -> str | None:
    if address in ("127.0.0.11", "127.0.0.12"):
        return f"{address}:{port}"
    return f"[::1]:{port}" if address == "::1" else None


def _state(services: list[tuple[str, str, str, list[str]]]) -> tuple[ClusterState, dict[str, set[str]]]:
    """The state the agent decodes from these keys, and the routes the oracle expects (host ->
    peers; of two services naming one host, the first by name)."""
    schema = KeySchema("/p")
    kvs, instances = [], {}
    expected: dict[str, tuple[str, set[str]]] = {}
    for i, (group, service, host, addresses) in enumerate(services):
        name = ServiceName(group=group, service=service)
        body = json.dumps({"image": "x", "http_host": host, "http_port": 8080}).encode()
        kvs.append(RawKV(key=schema.service(name), value=body, mod_revision=i + 2))
        for n, address in enumerate(addresses, start=1):
            instances[(name, n)] = InstanceRecord(service=name, number=n, node=f"n{n}", address=address,
                                                  state="running", ports=(("8080/tcp", 30000 + n),))
        want = oracle_host(host)
        if want is not None and (want not in expected or str(name) < expected[want][0]):
            peers = {p for n, a in enumerate(addresses, start=1) if (p := oracle_peer(a, 30000 + n))}
            expected[want] = (str(name), peers)
    decoded = decode_state(schema, kvs)
    return ClusterState(services=decoded.services, instances=instances), {h: p for h, (_, p) in expected.items()}


async def test_the_table_in_nginx_holds_exactly_the_valid_hosts(nginx: NginxManager) -> None:
    """The expected table comes from the test's own oracle, not from the project's validators."""
    seen: list[int] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(services=st.lists(st.tuples(LABEL, LABEL, HOST, st.lists(ADDRESS, max_size=3)), max_size=5,
                             unique_by=lambda t: (t[0], t[1])))
    def check(services: list[tuple[str, str, str, list[str]]]) -> None:
        state, expected = _state(services)
        nginx.update(state)
        asyncio.run_coroutine_threadsafe(nginx.push_once(), loop).result(10)
        dump = asyncio.run_coroutine_threadsafe(_dump(nginx), loop).result(10)
        routes = {line.split()[1]: set(line.split()[2:]) for line in dump.splitlines() if line.startswith("route ")}
        assert routes == expected, dump
        seen.append(len(expected))

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
