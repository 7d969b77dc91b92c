"""Table tests for the pure .container zone."""

from __future__ import annotations

import pytest

from daprdockr.core.dns.zone import Soa, Srv, Zone
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from daprdockr.core.state import ClusterState

WEB = ServiceName(group="myapp", service="web")
IDLE = ServiceName(group="myapp", service="idle")


def rec(n: int, addr: str, state: str = "running") -> InstanceRecord:
    return InstanceRecord(service=WEB, number=n, node=f"n{n}", address=addr, state=state,  # type: ignore[arg-type]
                          ports=(("53/udp", 40000 + n), ("8080/tcp", 30000 + n)))


STATE = ClusterState(
    services={WEB: ServiceSpec(name=WEB, image="x", instances=4, http_port=8080),
              IDLE: ServiceSpec(name=IDLE, image="x", instances=0)},
    instances={(WEB, 1): rec(1, "127.0.0.11"), (WEB, 2): rec(2, "127.0.0.12"), (WEB, 3): rec(3, "127.0.0.11"),
               (WEB, 4): rec(4, "::1"), (WEB, 5): rec(5, "127.0.0.15", state="starting")},
    revision=42,
)
ZONE = Zone(STATE, ttl=3)


@pytest.mark.parametrize(
    ("qname", "qtype", "rcode", "data"),
    [
        ("1.web.myapp.container.", "A", "NOERROR", ["127.0.0.11"]),
        ("1.WEB.MyApp.Container.", "A", "NOERROR", ["127.0.0.11"]),
        ("1.web.myapp.container", "A", "NOERROR", ["127.0.0.11"]),
        ("web.myapp.container.", "A", "NOERROR", ["127.0.0.11", "127.0.0.12"]),
        ("web.myapp.container.", "AAAA", "NOERROR", ["::1"]),
        ("4.web.myapp.container.", "AAAA", "NOERROR", ["::1"]),
        ("4.web.myapp.container.", "A", "NOERROR", []),
        ("1.web.myapp.container.", "AAAA", "NOERROR", []),
        ("5.web.myapp.container.", "A", "NXDOMAIN", []),  # starting, and beyond the spec's 4
        ("9.web.myapp.container.", "A", "NXDOMAIN", []),
        ("idle.myapp.container.", "A", "NOERROR", []),  # service exists, nothing running
        ("myapp.container.", "A", "NOERROR", ["127.0.0.11", "127.0.0.12"]),  # every instance of the group
        ("myapp.container.", "AAAA", "NOERROR", ["::1"]),
        ("8080.tcp.1.web.myapp.container.", "SRV", "NOERROR", ["30001 1"]),  # the original's SRV form
        ("53.udp.2.web.myapp.container.", "SRV", "NOERROR", ["40002 2"]),
        ("9999.tcp.1.web.myapp.container.", "SRV", "NXDOMAIN", []),
        ("8080.tcp.5.web.myapp.container.", "SRV", "NXDOMAIN", []),  # beyond the spec's 4
        ("nope.myapp.container.", "A", "NXDOMAIN", []),
        ("container.", "SOA", "NOERROR", ["soa"]),
        ("container.", "NS", "NOERROR", ["ns.container."]),
        ("_8080._tcp.web.myapp.container.", "SRV", "NOERROR", ["30001 1", "30002 2", "30003 3", "30004 4"]),
        ("_53._udp.web.myapp.container.", "SRV", "NOERROR", ["40001 1", "40002 2", "40003 3", "40004 4"]),
        ("_9999._tcp.web.myapp.container.", "SRV", "NXDOMAIN", []),
        ("2.web.myapp.container.", "SRV", "NOERROR", ["40002 2", "30002 2"]),
        ("_tcp.web.myapp.container.", "SRV", "NOERROR", []),
    ],
)
def test_lookup(qname: str, qtype: str, rcode: str, data: list[str]) -> None:
    ans = ZONE.lookup(qname, qtype)
    assert ans.rcode == rcode and ans.authoritative

    def show(d: object) -> str:
        if isinstance(d, Srv):
            return f"{d.port} {d.target.split('.')[0]}"
        return "soa" if isinstance(d, Soa) else str(d)

    assert [show(rr.data) for rr in ans.answers] == data
    if not data:
        assert [rr.rtype for rr in ans.authority] == ["SOA"]  # negative answers carry the SOA
        assert [rr.ttl for rr in ans.authority] == [1]  # cached for at most a second (RFC 2308)
        assert all(isinstance(rr.data, Soa) and rr.data.minimum == 1 for rr in ans.authority)
    assert all(rr.ttl == 3 for rr in ans.answers)


def test_srv_additional_has_target_addresses() -> None:
    ans = ZONE.lookup("_8080._tcp.web.myapp.container.", "SRV")
    assert sorted(str(rr.data) for rr in ans.additional) == ["127.0.0.11", "127.0.0.11", "127.0.0.12", "::1"]
    targets = {rr.data.target for rr in ans.answers if isinstance(rr.data, Srv)}
    assert targets == {f"{n}.web.myapp.container." for n in (1, 2, 3, 4)}


def test_in_zone_and_soa_serial() -> None:
    assert ZONE.in_zone("a.B.Container.") and ZONE.in_zone("container.")
    assert not ZONE.in_zone("container.example.com.") and not ZONE.in_zone("xcontainer.")
    assert isinstance(ZONE.soa.data, Soa) and ZONE.soa.data.serial == 42


def test_custom_domain_and_bad_address_skipped() -> None:
    state = ClusterState(instances={(WEB, 1): rec(1, "not-an-ip")}, services={})
    zone = Zone(state, domain="svc.local")
    assert zone.lookup("1.web.myapp.svc.local.", "A").rcode == "NXDOMAIN"
    assert zone.lookup("svc.local.", "SOA").rcode == "NOERROR"


MOVING = ClusterState(
    services={WEB: ServiceSpec(name=WEB, image="x", instances=3, http_port=8080)},
    instances={(WEB, 1): rec(1, "127.0.0.11"), (WEB, 2): rec(2, "127.0.0.12", state="starting")},
    revision=43,
)


@pytest.mark.parametrize(
    ("qname", "qtype", "rcode"),
    [
        ("2.web.myapp.container.", "A", "NOERROR"),  # starting on its new node
        ("3.web.myapp.container.", "A", "NOERROR"),  # no record at all (its old node's lease ran out)
        ("3.web.myapp.container.", "SRV", "NOERROR"),
        ("8080.tcp.3.web.myapp.container.", "SRV", "NOERROR"),  # a port of the spec
        ("9999.tcp.3.web.myapp.container.", "SRV", "NXDOMAIN"),  # not one
        ("8080.udp.3.web.myapp.container.", "SRV", "NXDOMAIN"),
        ("4.web.myapp.container.", "A", "NXDOMAIN"),  # beyond the spec's 3
        ("0.web.myapp.container.", "A", "NXDOMAIN"),
        ("3.api.myapp.container.", "A", "NXDOMAIN"),  # no such service
        ("x.3.web.myapp.container.", "A", "NXDOMAIN"),
    ],
)
def test_an_instance_the_spec_promises_is_nodata_while_it_moves(qname: str, qtype: str, rcode: str) -> None:
    ans = Zone(MOVING, ttl=5).lookup(qname, qtype)
    assert (ans.rcode, ans.answers) == (rcode, ())
    assert [(rr.rtype, rr.ttl) for rr in ans.authority] == [("SOA", 1)]


def test_a_scale_down_makes_the_numbers_beyond_nxdomain_again() -> None:
    zone = Zone(MOVING, ttl=5)
    assert zone.lookup("3.web.myapp.container.", "A").rcode == "NOERROR"
    fewer = ClusterState(services={WEB: ServiceSpec(name=WEB, image="x", instances=2, http_port=8080)},
                         instances=MOVING.instances, revision=44)
    zone.update(fewer)
    assert zone.lookup("3.web.myapp.container.", "A").rcode == "NXDOMAIN"
    assert zone.lookup("2.web.myapp.container.", "A").rcode == "NOERROR"
