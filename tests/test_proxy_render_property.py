"""Property test against the real ``nginx -t``: whatever specs and records are thrown at the agent
(valid or hostile), the rendered config parses and routes exactly the intended host names."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daprdockr.core.keys import KeySchema
from daprdockr.core.model import InstanceRecord
from daprdockr.core.names import ServiceName
from daprdockr.core.nginx_render import NginxPaths, render_nginx_conf
from daprdockr.core.state import ClusterState, RawKV, decode_state
from daprdockr.errors import ValidationError
from tests.conftest import missing

pytestmark = pytest.mark.nginx
LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
GOOD_HOST = st.lists(LABEL, min_size=1, max_size=3).map(lambda labels: ".".join([*labels, "test"]))
HOSTILE = st.sampled_from(["x\n.com", "a.com;", "a.com }", "a b.com", "*.com", ".com", "a.com\n", "~^.*$",
                           'a"b.com', "a.com#", "x\r\n.org", "é.com", "a..com", "a.com:80", "$host"])
HOST = st.one_of(GOOD_HOST, HOSTILE, st.text(max_size=20))
ADDRESS = st.one_of(st.sampled_from(["127.0.0.11", "127.0.0.12", "::1"]),
                    st.sampled_from(["1.2.3.4; evil", "not-an-ip", "127.0.0.1\n", "", "[::1]"]))


@pytest.fixture(scope="module")
def nginx() -> str:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        missing("nginx")
    return binary


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(services=st.lists(st.tuples(LABEL, LABEL, HOST, st.lists(ADDRESS, max_size=3)), max_size=5))
def test_rendered_config_parses_and_routes_exactly_the_valid_hosts(
    nginx: str, tmp_path_factory: pytest.TempPathFactory, services: list[tuple[str, str, str, list[str]]]
) -> None:
    import json

    schema = KeySchema("/p")
    kvs, instances = [], {}
    for i, (group, service, host, addresses) in enumerate(services):
        name = ServiceName(group=group, service=service)
        body = json.dumps({"image": "x", "http_host": host, "http_port": 8080}).encode()
        kvs.append(RawKV(key=schema.service(name), value=body, mod_revision=i + 2))
        for n, address in enumerate(addresses, start=1):
            instances[(name, n)] = InstanceRecord(service=name, number=n, node="n1", address=address,
                                                  state="running", ports=(("8080/tcp", 30000 + n),))
    decoded = decode_state(schema, kvs)
    wanted = {spec.http_host for spec in decoded.services.values() if spec.http_host is not None}
    state = ClusterState(services=decoded.services, instances=instances)
    root = tmp_path_factory.mktemp("nginx")
    (root / "tmp").mkdir()
    rendered = render_nginx_conf(state, listen=("127.0.0.1", 18080), paths=NginxPaths(root=str(root)))
    conf = root / "nginx.conf"
    conf.write_text(rendered.text)
    check = subprocess.run([nginx, "-t", "-q", "-p", str(root), "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr + rendered.text
    names = {n for line in re.findall(r"^\s*server_name ([^;]*);", rendered.text, re.M) for n in line.split()}
    # duplicate hosts across services are one name: nginx warns and routes to the first
    assert names == wanted | {"_"}, rendered.text
    for bad in ("evil", "not-an-ip"):
        assert bad not in rendered.text


def test_hostile_hosts_are_refused_by_the_model() -> None:
    from daprdockr.core.model import ServiceSpec

    for host in ["x\n.com", "a.com;", "*.com", ".com", "a.com\n"]:
        with pytest.raises(ValidationError):
            ServiceSpec.from_dict({"image": "x", "http_host": host, "http_port": 80},
                                  name=ServiceName(group="g", service="s"))
