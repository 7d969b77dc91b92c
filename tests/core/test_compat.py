"""Compatibility with the original DaprDockr, the pure parts: its service JSON both ways, Go flag
parsing and usage, host IP detection from a route table, and the container options."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from daprdockr.clikit.goflags import Flag, HelpRequested, parse, usage
from daprdockr.core.containerspec import ContainerOptions, Volume, default_hostname, parse_memory
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.routetable import host_ip, parse_routes
from daprdockr.core.seedformat import from_seed, is_seed_doc, marshal_indent, to_seed
from daprdockr.errors import ValidationError

WEB = ServiceName(group="myapp", service="web")


# ------------------------------------------------------------------ the original's service JSON
def test_original_json_maps_field_by_field_case_insensitively() -> None:
    doc = {"name": "web", "GROUP": "myapp", "Instances": 3,
           "container": {"IMAGE": "busybox", "cmd": ["httpd"], "Env": ["A=1", "B=x=y"],
                         "ExposedPorts": {"8080/tcp": {}}, "WorkingDir": "/srv", "cpushares": 100,
                         "Volumes": {"/data": {}}, "Labels": {"team": "a"}, "MemorySwap": 0, "Dns": ["1.1.1.1"]},
           "Http": {"hostname": "web.example.com", "ContainerPort": "8080"}}
    assert is_seed_doc(doc)
    ours, ignored = from_seed(doc)
    assert ours == {"name": "web.myapp", "instances": 3, "image": "busybox", "cmd": ["httpd"],
                    "env": {"A": "1", "B": "x=y"}, "ports": ["8080/tcp"], "workdir": "/srv", "cpu_shares": 100,
                    "volumes": ["/data"], "labels": {"team": "a"}, "http_host": "web.example.com", "http_port": 8080}
    assert ignored == ["Container.dns"]  # set but not managed; zero values are not worth a word
    spec = ServiceSpec.from_dict(ours)
    back = to_seed(spec)
    assert list(back) == ["Name", "Group", "Instances", "Container", "Http"]
    assert "Labels" not in back["Container"]  # not a field of the original's type
    unlabelled = {k: v for k, v in ours.items() if k != "labels"}
    assert from_seed(back) == (unlabelled, [])  # Go's zero values read back as "not set", nothing ignored
    assert ServiceSpec.from_dict(from_seed(back)[0]) == ServiceSpec.from_dict(unlabelled)


@pytest.mark.parametrize(("doc", "instances"), [
    ({}, 0), ({"Instances": None}, 0), ({"Instances": 0}, 0), ({"instances": 3}, 3),
])
def test_original_instances_missing_or_zero_mean_none_as_in_go(doc: dict[str, Any], instances: int) -> None:
    ours, _ = from_seed({"Name": "web", "Group": "myapp", "Container": {"Image": "busybox"}, **doc})
    assert ServiceSpec.from_dict(ours).instances == instances


@pytest.mark.parametrize(("disabled", "network", "ignored"), [(True, "none", []), (False, "bridge", [])])
def test_original_network_disabled_is_network_none(disabled: bool, network: str, ignored: list[str]) -> None:
    ours, skipped = from_seed({"Name": "web", "Group": "myapp",
                               "Container": {"Image": "busybox", "NetworkDisabled": disabled}})
    assert ServiceSpec.from_dict(ours).container.network == network and skipped == ignored
    assert to_seed(ServiceSpec.from_dict(ours))["Container"]["NetworkDisabled"] is disabled
    with pytest.raises(ValidationError, match="true or false"):
        from_seed({"Container": {"Image": "busybox", "NetworkDisabled": "yes"}})


# What the original printed (Go's json.MarshalIndent(config, "", "  ") of its config type, whose
# Container is Docker 0.7's Config) for `daprdockrcmd -set -svc web.myapp -image busybox -instances 1`.
GO_MINIMAL = """{
  "Name": "web",
  "Group": "myapp",
  "Instances": 1,
  "Container": {
    "Hostname": "",
    "Domainname": "",
    "User": "",
    "Memory": 0,
    "MemorySwap": 0,
    "CpuShares": 0,
    "AttachStdin": false,
    "AttachStdout": false,
    "AttachStderr": false,
    "PortSpecs": null,
    "ExposedPorts": null,
    "Tty": false,
    "OpenStdin": false,
    "StdinOnce": false,
    "Env": null,
    "Cmd": null,
    "Dns": null,
    "Image": "busybox",
    "Volumes": null,
    "VolumesFrom": "",
    "WorkingDir": "",
    "Entrypoint": null,
    "NetworkDisabled": false
  },
  "Http": {
    "HostName": "",
    "ContainerPort": ""
  }
}"""


def test_seed_output_is_the_originals_type_with_go_zero_values() -> None:
    assert marshal_indent(to_seed(ServiceSpec.from_dict({"image": "busybox"}, name=WEB))) == GO_MINIMAL
    full = to_seed(ServiceSpec.from_dict({
        "image": "busybox", "instances": 2, "cmd": ["httpd", "-f"], "env": {"B": "2", "A": "1"},
        "ports": ["9000/tcp", "53/udp"], "http_host": "web.example.com", "http_port": 8080, "user": "nobody",
        "workdir": "/www", "entrypoint": [], "hostname": "web", "memory": "64m", "cpu_shares": 512,
        "volumes": ["/b", "/a", "cache:/c"], "labels": {"team": "x"}, "pids_limit": 5}, name=WEB))
    c = full["Container"]
    assert (c["ExposedPorts"], c["Env"], c["Cmd"], c["Entrypoint"]) == (
        {"53/udp": {}, "8080/tcp": {}, "9000/tcp": {}}, ["A=1", "B=2"], ["httpd", "-f"], [])
    assert list(c["ExposedPorts"]) == ["53/udp", "8080/tcp", "9000/tcp"]  # Go sorts map keys
    assert (c["User"], c["WorkingDir"], c["Hostname"], c["Memory"], c["CpuShares"]) == (
        "nobody", "/www", "web", 64 * 1024**2, 512)
    assert list(c["Volumes"]) == ["/a", "/b"]  # anonymous volumes only
    assert full["Http"] == {"HostName": "web.example.com", "ContainerPort": "8080"}
    assert '"Entrypoint": [],' in marshal_indent(full)


@pytest.mark.parametrize(("value", "text"), [
    ("<a&b>", r'"\u003ca\u0026b\u003e"'), ("tab\there", r'"tab\u0009here"'), ('q"\\', r'"q\"\\"'),
    ("line\n\r", r'"line\n\r"'), ("é\u2028", '"é\\u2028"'), ({}, "{}"), ([], "[]"), (None, "null"),
    ({"a": [1, True]}, '{\n  "a": [\n    1,\n    true\n  ]\n}'),
])
def test_marshal_indent_writes_json_as_go_does(value: Any, text: str) -> None:
    assert marshal_indent(value) == text


@pytest.mark.parametrize(("doc", "message"), [
    ({"Name": "web", "Group": "g", "name": "x"}, "given twice"),
    ({"Container": {"Image": "x", "Env": "A=1"}}, "K=V"),
    ({"Container": {"Image": "x", "Env": ["A"]}}, "not K=V"),
    ({"Name": "web", "Group": 5, "Container": {"Image": "x"}}, "strings"),
    ({"Container": {"Image": "x", "ExposedPorts": ["80"]}}, "keyed by"),
    ({"Container": "busybox"}, "must be an object"),
])
def test_bad_original_documents_are_refused_clearly(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        from_seed(doc)


def test_our_documents_are_not_mistaken_for_the_original() -> None:
    assert not is_seed_doc({"image": "x", "instances": 2})
    assert not is_seed_doc({"name": "web.myapp", "image": "x"})
    assert is_seed_doc({"Name": "web", "Group": "g", "Instances": 1})


# ------------------------------------------------------------------ Go flags
FLAGS = [Flag("get", "bool", "Get.", True), Flag("svc", "string", "Service."), Flag("n", "int", "Count.", 0),
         Flag("vol", "list", "Volume."), Flag("etcd", "string", "etcd.", "http://a", env="ETCD_HOSTS")]


@pytest.mark.parametrize(("argv", "values"), [
    (["-svc", "a.b"], {"svc": "a.b", "get": True}),
    (["-svc=a.b", "-get=false"], {"svc": "a.b", "get": False}),
    (["--svc", "a.b", "--get"], {"svc": "a.b", "get": True}),
    (["-n", "0x10", "-vol", "/a", "-vol=/b"], {"n": 16, "vol": ["/a", "/b"]}),
])
def test_go_flag_forms(argv: list[str], values: dict[str, Any]) -> None:
    p = parse(argv, FLAGS, environ={})
    for k, v in values.items():
        assert p.values[k] == v
    assert p.given == {a.lstrip("-").split("=")[0] for a in argv if a.startswith("-")}


def test_go_flag_errors_help_and_environment() -> None:
    for argv, message in [(["-x"], "not defined: -x"), (["-svc"], "needs an argument"),
                          (["-get=maybe"], "invalid boolean"), (["-n", "two"], "not an integer"),
                          (["---svc"], "bad flag syntax")]:
        with pytest.raises(ValidationError, match=message):
            parse(argv, FLAGS, environ={})
    for argv in (["-h"], ["-help"], ["--help"]):
        with pytest.raises(HelpRequested):
            parse(argv, FLAGS, environ={})
    assert parse([], FLAGS, environ={"ETCD_HOSTS": "http://e"}).values["etcd"] == "http://e"
    assert parse(["-etcd", "http://f"], FLAGS, environ={"ETCD_HOSTS": "http://e"}).values["etcd"] == "http://f"
    assert parse(["-svc", "a.b", "rest", "-get"], FLAGS, environ={}).args == ("rest", "-get")


def test_usage_is_the_originals_layout() -> None:
    text = usage("daprdockrcmd", FLAGS)
    assert text.splitlines() == [
        "Usage of daprdockrcmd:",
        '  -etcd="http://a": etcd. (env ETCD_HOSTS)',
        "  -get=true: Get.",
        "  -n=0: Count.",
        '  -svc="": Service.',
        "  -vol=[]: Volume.",
    ]
    # the default a flag takes from its environment variable is the default shown
    shown = usage("daprdockrd", FLAGS, environ={"ETCD_HOSTS": "http://e:2379"}).splitlines()
    assert '  -etcd="http://e:2379": etcd. (env ETCD_HOSTS)' in shown


# ------------------------------------------------------------------ host IP from the route table
ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""
IFACES = [("lo", ipaddress.IPv4Interface("127.0.0.1/8")), ("docker0", ipaddress.IPv4Interface("172.17.0.1/16")),
          ("eth0", ipaddress.IPv4Interface("192.0.2.7/24"))]


def test_the_host_ip_is_the_address_in_the_default_gateways_subnet() -> None:
    routes = parse_routes(ROUTES)
    assert [str(r.gateway) for r in routes if r.is_default] == ["192.0.2.1"]
    assert host_ip(routes, IFACES) == "192.0.2.7"


def route_table(*routes: tuple[str, str, str, int]) -> str:
    """A /proc/net/route text of default routes: (interface, gateway, flags, metric)."""
    def le(ip: str) -> str:
        return f"{int.from_bytes(ipaddress.IPv4Address(ip).packed, 'little'):08X}"

    lines = [ROUTES.splitlines()[0]]
    lines += [f"{i}\t00000000\t{le(gw)}\t{flags:04X}\t0\t0\t{metric}\t00000000\t0\t0\t0"
              for i, gw, flags, metric in routes]
    return "\n".join(lines) + "\n"


def ifs(*items: str) -> list[tuple[str, ipaddress.IPv4Interface]]:
    """``"eth0=192.0.2.7/24"`` -> (name, interface), in the order given (the kernel's)."""
    return [(name, ipaddress.IPv4Interface(addr)) for name, addr in (item.split("=") for item in items)]


UP_GW, UP = 0x3, 0x1


@pytest.mark.parametrize(("routes", "interfaces", "expected"), [
    # the default route's interface has several addresses: the one in the gateway's subnet
    ([("eth0", "192.0.2.1", UP_GW, 0)], ifs("lo=127.0.0.1/8", "eth0=10.0.0.5/24", "eth0=192.0.2.7/24"), "192.0.2.7"),
    # another interface in the same subnet listed first: the route's own interface wins
    ([("eth0", "192.0.2.1", UP_GW, 0)], ifs("eth1=192.0.2.9/24", "eth0=192.0.2.7/24"), "192.0.2.7"),
    # several default routes: the lowest metric first
    ([("eth0", "192.0.2.1", UP_GW, 600), ("wlan0", "198.51.100.1", UP_GW, 100)],
     ifs("eth0=192.0.2.7/24", "wlan0=198.51.100.8/24"), "198.51.100.8"),
    ([("eth0", "192.0.2.1", UP_GW, 100), ("wlan0", "198.51.100.1", UP_GW, 600)],
     ifs("eth0=192.0.2.7/24", "wlan0=198.51.100.8/24"), "192.0.2.7"),
    # a default route without a gateway (point to point): its interface's first address
    ([("ppp0", "0.0.0.0", UP, 0)], ifs("eth0=192.0.2.7/24", "ppp0=203.0.113.5/32", "ppp0=203.0.113.6/32"),
     "203.0.113.5"),
    # the route's own interface has no address in the gateway's subnet: another interface's
    ([("eth0", "192.0.2.1", UP_GW, 0)], ifs("eth0=10.0.0.5/24", "br0=192.0.2.7/24"), "192.0.2.7"),
])
def test_host_ip_rule(routes: list[tuple[str, str, int, int]], interfaces: list[tuple[str, ipaddress.IPv4Interface]],
                      expected: str) -> None:
    assert host_ip(parse_routes(route_table(*routes)), interfaces) == expected


@pytest.mark.parametrize(("routes", "interfaces", "message"), [
    ([("eth0", "192.0.2.1", 0x2, 0)], ifs("eth0=192.0.2.7/24"), "no default route"),  # not up
    ([("lo", "0.0.0.0", UP, 0)], ifs("lo=127.0.0.1/8"), "0.0.0.0 on lo"),  # loopback never counts
    ([("eth0", "192.0.2.1", UP_GW, 0)], ifs("eth0=10.0.0.5/24"), "192.0.2.1 on eth0"),
])
def test_host_ip_rule_failures(routes: list[tuple[str, str, int, int]],
                               interfaces: list[tuple[str, ipaddress.IPv4Interface]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        host_ip(parse_routes(route_table(*routes)), interfaces)


def test_host_ip_detection_says_why_it_failed() -> None:
    with pytest.raises(ValidationError, match="no default route"):
        host_ip(parse_routes(ROUTES.splitlines()[0] + "\n"), IFACES)
    with pytest.raises(ValidationError, match=r"192\.0\.2\.1"):
        host_ip(parse_routes(ROUTES), IFACES[:2])
    with pytest.raises(ValidationError, match="not a /proc/net/route"):
        parse_routes("garbage")
    with pytest.raises(ValidationError, match="malformed route"):
        parse_routes(ROUTES + "eth1\tzz\n")


# ------------------------------------------------------------------ container options
def spec(**extra: Any) -> ServiceSpec:
    return ServiceSpec.from_dict({"image": "busybox", **extra}, name=WEB)


def test_container_options_parse_round_trip_and_change_the_hash() -> None:
    full = spec(user="1000:1000", workdir="/srv/app/", entrypoint=["/bin/sh", "-c"], hostname="web-1.local",
                memory="512m", cpus=0.5, cpu_shares=256, pids_limit=100,
                volumes=["/cache", "data:/data:ro", "/srv/www:/www"], network="bridge")
    assert full.container == ContainerOptions(
        user="1000:1000", workdir="/srv/app", entrypoint=("/bin/sh", "-c"), hostname="web-1.local",
        memory=512 * 1024**2, cpus=0.5, cpu_shares=256, pids_limit=100,
        volumes=(Volume(target="/cache"), Volume(target="/data", kind="volume", source="data", read_only=True),
                 Volume(target="/www", kind="bind", source="/srv/www")))
    assert ServiceSpec.from_dict(full.to_dict(), name=WEB) == full
    base = spec()
    assert "user" not in base.to_dict() and base.runtime_hash == ServiceSpec(name=WEB, image="busybox").runtime_hash
    for field, value in [("user", "nobody"), ("workdir", "/x"), ("entrypoint", ["a"]), ("hostname", "h"),
                         ("memory", "64m"), ("cpus", 1), ("cpu_shares", 10), ("pids_limit", 5),
                         ("volumes", ["/v"]), ("network", "none")]:
        assert spec(**{field: value}).runtime_hash != base.runtime_hash, field


@pytest.mark.parametrize(("extra", "message"), [
    ({"user": "root;rm"}, "user"), ({"workdir": "relative"}, "absolute"), ({"workdir": "/a/../b"}, "'..'"),
    ({"entrypoint": "sh -c x"}, "list of arguments"), ({"hostname": "bad_name"}, "host name"),
    ({"hostname": "a" * 64}, "host name"), ({"memory": "1k"}, "6m"), ({"memory": "lots"}, "size"),
    ({"cpus": 0.001}, "0.01..1024"), ({"cpu_shares": 1}, "2..262144"), ({"pids_limit": -1}, "1..4194304"),
    ({"volumes": "/data"}, "list"), ({"volumes": ["data"]}, "absolute path"), ({"volumes": ["/a:/b:rx"]}, "like"),
    ({"volumes": ["/a:/x", "b:/x"]}, "same container path"), ({"volumes": ["bad name:/x"]}, "volume name"),
    ({"volumes": ["/x:ro"]}, "no mode"), ({"network": "overlay"}, "bridge"),
    ({"network": "host", "http_port": 80}, "not published"),
])
def test_bad_container_options_are_refused_naming_the_field(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(**extra)


@pytest.mark.parametrize(("text", "size"), [(67108864, 67108864), ("64m", 64 * 1024**2), ("1g", 1024**3),
                                            ("1.5GB", int(1.5 * 1024**3)), ("8192k", 8 * 1024**2)])
def test_memory_sizes(text: object, size: int) -> None:
    assert parse_memory(text) == size


def test_default_hostname_keeps_whole_labels_within_63() -> None:
    assert default_hostname(number=3, service="web", group="myapp") == "3.web.myapp"
    long = "s" * 40
    assert default_hostname(number=3, service=long, group="g" * 30) == f"3.{long}"
