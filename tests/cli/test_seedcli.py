"""The original DaprDockr's daprdockrcmd/daprdockrd flag interfaces, as real processes on real etcd."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import pstats
import signal
import subprocess
from pathlib import Path

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.hostip import interface_addresses
from daprdockr.agent.config import AgentConfig
from daprdockr.cli.seedcli import D_FLAGS, daprdockrd_config
from daprdockr.clikit.goflags import parse
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.errors import ValidationError
from tests.cli.test_cli import BIN, IMG, run_bin

pytestmark = pytest.mark.etcd


@pytest.mark.parametrize(
    "flags",
    [
        ["-svc", "web.myapp", "-set", "-image", IMG, "-instances", "3"],
        ["-svc=web.myapp", "-set=true", "-image=" + IMG, "-instances=3"],
        ["--svc", "web.myapp", "--set", "--image", IMG, "--instances", "3"],
    ],
    ids=["-flag value", "-flag=value", "--flag"],
)
def test_set_forms(etcd_endpoints: str, prefix: str, flags: list[str]) -> None:
    r = run_bin("daprdockrcmd", *flags, "-cmd", "httpd -f -p '8080'", "-http-host", "web.example.com",
                "-http-port", "8080", f"-etcd={etcd_endpoints}", "-prefix", prefix, etcd="", prefix="")
    assert r.returncode == 0, r.stderr
    got = run_bin("daprdockrcmd", "-svc", "web.myapp", "-get", "-etcd", etcd_endpoints, "-prefix", prefix,
                  etcd="", prefix="")
    spec = json.loads(got.stdout)
    assert spec["instances"] == 3 and spec["cmd"] == ["httpd", "-f", "-p", "8080"]
    assert spec["http_host"] == "web.example.com" and spec["http_port"] == 8080


def test_stdin_del_and_set_prints_the_stored_spec(etcd_endpoints: str, prefix: str) -> None:
    common = [f"-etcd={etcd_endpoints}", "-prefix", prefix]
    doc = json.dumps({"image": IMG, "instances": 2, "env": {"A": "b"}})
    r = run_bin("daprdockrcmd", "-svc", "api.myapp", "-set", "-stdin", "-v", *common, etcd="", prefix="", stdin=doc)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["env"] == {"A": "b"}  # as the original: -set prints what is stored
    assert run_bin("daprdockrcmd", "-svc", "api.myapp", "-del", *common, etcd="", prefix="").returncode == 0
    again = run_bin("daprdockrcmd", "-svc", "api.myapp", "-get", *common, etcd="", prefix="")
    assert again.returncode == 3 and "not found" in again.stderr


@pytest.mark.parametrize(
    ("flags", "code"),
    [
        (["-svc", "web.myapp.extra"], 2),  # one dot only
        (["-get"], 2),  # no service
        (["-svc", "Web.myapp", "-get"], 2),
        (["-svc", "web.myapp", "-get", "-format", "xml"], 2),
        (["-svc", "web.myapp", "-set", "-image", IMG, "-volume", "/etc"], 0),  # an anonymous volume is fine
        (["-svc", "web.myapp", "-set", "-image", IMG, "-volume", "/etc:/x:rx"], 2),
        (["-svc", "web.myapp", "-set", "-image", IMG, "-http-host", "x;y", "-http-port", "1"], 2),
        (["-svc", "web.myapp", "-bogus"], 2),
        (["-svc", "web.myapp", "-set=maybe"], 2),
    ],
)
def test_errors(etcd_endpoints: str, prefix: str, flags: list[str], code: int) -> None:
    r = run_bin("daprdockrcmd", *flags, f"-etcd={etcd_endpoints}", "-prefix", prefix, etcd="", prefix="")
    assert r.returncode == code, r.stderr
    assert code == 0 or r.stderr.startswith("daprdockr: ")


def test_default_etcd_is_the_seed_cluster(prefix: str) -> None:
    r = run_bin("daprdockrcmd", "-svc", "web.myapp", "-get", "-prefix", prefix, etcd="", prefix="")
    # nothing listens on the seed's ports in this test: the error must name all three endpoints
    if r.returncode == 4:
        for port in ("5001", "5002", "5003"):
            assert f"localhost:{port}" in r.stderr
    else:
        assert r.returncode in (0, 3)  # a seed-port cluster (make cluster) happens to be running


def test_daprdockrd_rejects_bad_flags_clearly() -> None:
    r = run_bin("daprdockrd", "-node-id", "Bad_Node", "-etcd", "http://127.0.0.1:1", etcd="", prefix="")
    assert r.returncode == 2 and "node" in r.stderr


def test_field_flags_round_trip(etcd_endpoints: str, prefix: str) -> None:
    common = ["-etcd", etcd_endpoints, "-prefix", prefix]
    r = run_bin("daprdockrcmd", "-svc", "web.myapp", "-set", "-image", IMG, "-instances", "2", "-memory", "64m",
                "-user", "65534:65534", "-workdir", "/srv/app/", "-entrypoint", "/bin/sh -c", "-hostname", "web",
                "-cpus", "0.5", "-cpu-shares", "256", "-pids-limit", "64", "-volume", "/cache",
                "-volume=data:/data:ro", "-network", "none", *common, etcd="", prefix="")
    assert r.returncode == 0, r.stderr
    got = json.loads(run_bin("daprdockrcmd", "-svc", "web.myapp", *common, etcd="", prefix="").stdout)
    assert {k: got.get(k) for k in ("memory", "user", "workdir", "entrypoint", "hostname", "cpus", "cpu_shares",
                                    "pids_limit", "volumes", "network")} == {
        "memory": 64 * 1024**2, "user": "65534:65534", "workdir": "/srv/app", "entrypoint": ["/bin/sh", "-c"],
        "hostname": "web", "cpus": 0.5, "cpu_shares": 256, "pids_limit": 64, "volumes": ["/cache", "data:/data:ro"],
        "network": "none"}
    seed = json.loads(run_bin("daprdockrcmd", "-svc", "web.myapp", "-format", "seed", *common, etcd="",
                              prefix="").stdout)["Container"]
    assert (seed["Memory"], seed["User"], seed["WorkingDir"], seed["Entrypoint"], seed["Hostname"],
            seed["CpuShares"], seed["Volumes"], seed["NetworkDisabled"]) == (
        64 * 1024**2, "65534:65534", "/srv/app", ["/bin/sh", "-c"], "web", 256, {"/cache": {}}, True)


# ------------------------------------------------------------------ daprdockrd's flags -> agent config
def route_via_a_local_interface(tmp_path: Path) -> tuple[Path, str]:
    """A route table whose default gateway is on a real non-loopback interface of this machine,
    and that interface's address (what detection must find)."""
    name, iface = next(((n, i) for n, i in interface_addresses() if not i.ip.is_loopback), ("", None))
    if iface is None:
        pytest.skip("no non-loopback IPv4 interface on this machine")
    gateway = next(h for h in iface.network.hosts() if h != iface.ip)
    le = f"{int.from_bytes(gateway.packed, 'little'):08X}"
    table = tmp_path / "route"
    table.write_text("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
                     f"{name}\t00000000\t{le}\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
    return table, str(iface.ip)


def d_config(argv: list[str], environ: dict[str, str]) -> AgentConfig:
    return daprdockrd_config(parse(argv, D_FLAGS, environ=environ))


def test_daprdockrd_in_the_original_images_way_detects_the_host_and_answers_dns_there(tmp_path: Path) -> None:
    route, address = route_via_a_local_interface(tmp_path)
    config = d_config(["-route", str(route)], {"ETCD_HOSTS": "http://127.0.0.1:5001,http://127.0.0.1:5002",
                                               "DOCKER_SOCK": "/host/docker/docker.sock"})
    assert config.advertise_ip == address and not ipaddress.ip_address(address).is_loopback
    assert (config.dns_listen, config.dns_also) == ((address, 53), (("127.0.0.1", 53),))  # -dns-listen auto
    assert config.container_dns == address  # containers are given the agent's DNS on the host's address
    assert config.docker == "unix:///host/docker/docker.sock"  # a bare path, as the image passes it
    assert [str(e) for e in config.etcd] == ["http://127.0.0.1:5001", "http://127.0.0.1:5002"]


@pytest.mark.parametrize(("argv", "environ", "expected"), [
    (["-host", "10.1.2.3"], {}, ("10.1.2.3", ("10.1.2.3", 53), (("127.0.0.1", 53),), "10.1.2.3")),
    ([], {"HOST_IP": "10.1.2.4"}, ("10.1.2.4", ("10.1.2.4", 53), (("127.0.0.1", 53),), "10.1.2.4")),
    (["-host=10.1.2.5"], {"HOST_IP": "10.1.2.4"}, ("10.1.2.5", ("10.1.2.5", 53), (("127.0.0.1", 53),), "10.1.2.5")),
    (["-host", "127.0.0.5"], {}, ("127.0.0.5", ("127.0.0.5", 53), (), "127.0.0.5")),  # loopback: no extra
    (["-host", "10.1.2.3", "-dns-listen", "127.0.0.1:5353"], {}, ("10.1.2.3", ("127.0.0.1", 5353), (), None)),
    (["-host", "10.1.2.3", "-dns-listen", "off"], {}, ("10.1.2.3", None, (), None)),
])
def test_daprdockrd_host_and_dns_flags(argv: list[str], environ: dict[str, str],
                                       expected: tuple[object, ...]) -> None:
    # the route table is never read when the address is given
    config = d_config([*argv, "-route", "/nonexistent/route"], environ)
    assert (config.advertise_ip, config.dns_listen, config.dns_also, config.container_dns) == expected


@pytest.mark.parametrize(("value", "url"), [
    ("/var/run/docker.sock", "unix:///var/run/docker.sock"), ("unix:///run/d.sock", "unix:///run/d.sock"),
    ("tcp://127.0.0.1:2375", "tcp://127.0.0.1:2375"),
])
def test_daprdockrd_docker_flag_and_environment(value: str, url: str) -> None:
    assert d_config(["-host", "10.1.2.3"], {"DOCKER_SOCK": value}).docker == url
    assert d_config(["-host", "10.1.2.3", "-docker", value], {"DOCKER_SOCK": "/elsewhere"}).docker == url


def test_daprdockrd_without_a_detectable_host_says_why(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot read the route table /nonexistent/route"):
        d_config(["-route", "/nonexistent/route"], {})
    empty = tmp_path / "route"
    empty.write_text("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n")
    r = run_bin("daprdockrd", "-route", str(empty), etcd="", prefix="")
    assert r.returncode == 2 and "no default route" in r.stderr and "give the address" in r.stderr


def test_daprdockrd_help_shows_the_environments_defaults() -> None:
    env = {**os.environ, "ETCD_HOSTS": "http://127.0.0.1:5009", "HOST_IP": "10.1.2.3"}
    r = subprocess.run([str(BIN / "daprdockrd"), "-help"], capture_output=True, text=True, env=env, timeout=30)
    lines = r.stderr.splitlines()
    assert r.returncode == 0 and r.stdout == "" and lines[0] == "Usage of daprdockrd:"
    assert any(line.startswith('  -etcd="http://127.0.0.1:5009": ') for line in lines), lines
    assert any(line.startswith('  -host="10.1.2.3": ') for line in lines), lines


async def test_daprdockrd_cpuprofile_writes_a_profile(etcd_endpoints: str, prefix: str, tmp_path: Path) -> None:
    node = f"cpuprof{os.getpid()}"
    profile = tmp_path / "cpu.prof"
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "daprdockrd"), "-etcd", etcd_endpoints, "-prefix", prefix, "-host", "127.0.0.1", "-node-id", node,
        "-dns-listen", "off", "-http-listen", "off", "-api-listen", "off", "-cpuprofile", str(profile),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with EtcdStore(endpoints=parse_endpoints(etcd_endpoints), schema=KeySchema(prefix)) as store:
            for _ in range(120):  # the agent is up once its node record is in etcd
                if node in (await store.snapshot()).nodes or proc.returncode is not None:
                    break
                await asyncio.sleep(0.25)
            assert node in (await store.snapshot()).nodes
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), timeout=40)
        except TimeoutError:
            proc.kill()
            _, err = await proc.communicate()
            raise AssertionError(f"no exit 40 s after SIGTERM: {err.decode()[-3000:]}") from None
    assert proc.returncode == 0, err.decode()[-2000:]
    stats = pstats.Stats(str(profile))  # a Python cProfile file
    assert any(file.endswith("daprdockr/agent/main.py") for file, _, _ in stats.stats)  # type: ignore[attr-defined]


ORIGINAL_JSON = {  # the original's config type, keys in mixed case as Go decodes them
    "Name": "api", "Group": "myapp", "instances": 2,
    "Container": {"Image": IMG, "Cmd": ["httpd", "-f", "-p", "9000"], "Env": ["MODE=prod", "EMPTY="],
                  "ExposedPorts": {"9000/tcp": {}, "53/udp": {}}, "User": "nobody", "WorkingDir": "/www",
                  "Entrypoint": ["/bin/busybox"], "Hostname": "api", "Memory": 67108864, "CpuShares": 512,
                  "Volumes": {"/data": {}}, "Domainname": "", "MemorySwap": 0},
    "HTTP": {"HostName": "api.example.com", "ContainerPort": "9000"},
}


def test_a_transcript_in_the_original_readmes_style_runs_unchanged(etcd_endpoints: str, prefix: str) -> None:
    def cmd(*args: str, stdin: str | None = None) -> str:
        r = run_bin("daprdockrcmd", *args, "-etcd", etcd_endpoints, "-prefix", prefix, etcd="", prefix="",
                    stdin=stdin)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout

    ip = run_bin("daprdockrcmd", "-ip", etcd="", prefix="")  # no etcd needed
    assert ip.returncode == 0 and ipaddress.ip_address(ip.stdout.strip()), ip.stderr
    usage = run_bin("daprdockrcmd", "-help", etcd="", prefix="")  # on stderr, as Go's flag package prints it
    assert usage.returncode == 0 and usage.stdout == "" and usage.stderr.startswith("Usage of daprdockrcmd:\n")
    for line in ('  -get=true: Get service configuration.', '  -instances=0: The target number of service instances.',
                 '  -svc="": The service to operate on, in the form "<service>.<group>".'):
        assert line in usage.stderr.splitlines()
    assert "Seed" not in usage.stderr + run_bin("daprdockrd", "-h", etcd="", prefix="").stderr

    stored = json.loads(cmd("-svc", "web.myapp", "-set", "-image", IMG, "-instances", "3", "-cmd",
                            "httpd -f -p 8080", "-http-host", "web.example.com", "-http-port", "8080"))
    assert stored["cmd"] == ["httpd", "-f", "-p", "8080"] and stored["http_port"] == 8080
    got = json.loads(cmd("-svc", "web.myapp"))  # -get is the default action
    assert got == stored
    cmd("-svc", "api.myapp", "-set", "-stdin", stdin=json.dumps(ORIGINAL_JSON))
    api = json.loads(cmd("-svc", "api.myapp", "-get"))
    assert api == {
        "name": "api.myapp", "image": IMG, "instances": 2, "cmd": ["httpd", "-f", "-p", "9000"],
        "env": {"MODE": "prod", "EMPTY": ""}, "ports": ["53/udp", "9000/tcp"], "labels": {},
        "http_host": "api.example.com", "http_port": 9000, "user": "nobody", "workdir": "/www",
        "entrypoint": ["/bin/busybox"], "hostname": "api", "memory": 67108864, "cpu_shares": 512,
        "volumes": ["/data"]}
    seed = json.loads(cmd("-svc", "api.myapp", "-format", "seed"))
    assert (seed["Name"], seed["Group"], seed["Instances"]) == ("api", "myapp", 2)
    assert list(seed["Container"]) == GO_CONTAINER_FIELDS and seed["Container"]["Dns"] is None
    assert seed["Container"]["Env"] == ["EMPTY=", "MODE=prod"] and seed["Http"]["ContainerPort"] == "9000"
    assert seed["Container"]["Volumes"] == {"/data": {}} and seed["Container"]["Memory"] == 67108864
    cmd("-svc", "web.myapp", "-del")
    gone = run_bin("daprdockrcmd", "-svc", "web.myapp", "-etcd", etcd_endpoints, "-prefix", prefix, etcd="",
                   prefix="")
    assert gone.returncode == 3
    # -set wins over -del, as in the original; a new service without -instances has none, as in the original
    assert json.loads(cmd("-svc", "web.myapp", "-set", "-del", "-image", IMG))["instances"] == 0
    # -stdin without -svc: the document names the service (the original ignored -svc with -stdin)
    doc = json.dumps({"Name": "web2", "Group": "myapp", "Container": {"Image": IMG}})
    assert json.loads(cmd("-set", "-stdin", stdin=doc))["name"] == "web2.myapp"
    assert json.loads(cmd("-stdin", stdin=doc))["instances"] == 0  # -stdin alone: -get of the service it names
    cmd("-stdin", "-del", stdin=doc)
    assert run_bin("daprdockrcmd", "-stdin", "-etcd", etcd_endpoints, "-prefix", prefix, etcd="", prefix="",
                   stdin=doc).returncode == 3


GO_CONTAINER_FIELDS = ["Hostname", "Domainname", "User", "Memory", "MemorySwap", "CpuShares", "AttachStdin",
                       "AttachStdout", "AttachStderr", "PortSpecs", "ExposedPorts", "Tty", "OpenStdin", "StdinOnce",
                       "Env", "Cmd", "Dns", "Image", "Volumes", "VolumesFrom", "WorkingDir", "Entrypoint",
                       "NetworkDisabled"]


@pytest.mark.parametrize(("args", "doc", "message"), [
    (["-svc", "other.myapp", "-set"], {"Name": "web", "Group": "myapp", "Container": {"Image": IMG}},
     "-svc names other.myapp but the document on stdin names web.myapp"),
    (["-set"], {"Container": {"Image": IMG}}, "give the service: -svc <service>.<group> (or Name and Group"),
    (["-set"], {"image": IMG}, "(or Name and Group in the document on stdin)"),
    (["-set"], {"Name": "web", "Group": "my.app", "Container": {"Image": IMG}}, "name"),
])
def test_stdin_without_a_clear_service_is_refused(etcd_endpoints: str, prefix: str, args: list[str],
                                                   doc: dict[str, object], message: str) -> None:
    r = run_bin("daprdockrcmd", *args, "-stdin", "-etcd", etcd_endpoints, "-prefix", prefix, etcd="", prefix="",
                stdin=json.dumps(doc))
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert run_bin("daprdockr", "svc", "ls", "--json", etcd=etcd_endpoints, prefix=prefix).stdout.strip() == "[]"


def test_set_of_a_new_service_says_it_has_no_instances(etcd_endpoints: str, prefix: str) -> None:
    common = ["-etcd", etcd_endpoints, "-prefix", prefix]
    r = run_bin("daprdockrcmd", "-svc", "web.myapp", "-set", "-image", IMG, *common, etcd="", prefix="")
    assert r.returncode == 0 and json.loads(r.stdout)["instances"] == 0
    assert "web.myapp has 0 instances (give -instances N to run it)" in r.stderr
    r = run_bin("daprdockrcmd", "-svc", "web.myapp", "-set", "-instances", "2", *common, etcd="", prefix="")
    assert json.loads(r.stdout)["instances"] == 2 and "0 instances" not in r.stderr
    r = run_bin("daprdockrcmd", "-svc", "web.myapp", "-set", "-cmd", "true", *common, etcd="", prefix="")
    assert json.loads(r.stdout)["instances"] == 2  # a stored service keeps its count (flags merge)


def test_svc_set_reads_the_original_json_too(etcd_endpoints: str, prefix: str, tmp_path: Path) -> None:
    path = tmp_path / "api.json"
    path.write_text(json.dumps(ORIGINAL_JSON))
    r = run_bin("daprdockr", "svc", "set", "-f", str(path), etcd=etcd_endpoints, prefix=prefix)
    assert r.returncode == 0, r.stderr
    assert "ignoring" not in r.stderr  # zero-valued extras are nothing to warn about
    path.write_text(json.dumps({**ORIGINAL_JSON, "Container": {**ORIGINAL_JSON["Container"], "Dns": ["1.1.1.1"]}}))
    r = run_bin("daprdockr", "svc", "set", "-f", str(path), etcd=etcd_endpoints, prefix=prefix)
    assert r.returncode == 0 and "Container.dns" in r.stderr, r.stderr
