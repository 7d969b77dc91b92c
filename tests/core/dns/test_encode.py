"""The zone answer encoder, decoded by two independent parsers (dnspython and dnslib)."""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from dnslib import DNSRecord

from daprdockr.core.dns.encode import encode_answer
from daprdockr.core.dns.zone import RR, Answer, Zone
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from daprdockr.core.state import ClusterState

WEB = ServiceName(group="myapp", service="web")
DB = ServiceName(group="myapp", service="db")


def _record(name: ServiceName, n: int, address: str) -> InstanceRecord:
    return InstanceRecord(service=name, number=n, node=f"n{n}", address=address, state="running",
                          ports=(("8080/tcp", 30000 + n), ("53/udp", 31000 + n)))


def zone(count: int = 3) -> Zone:
    recs = {(WEB, n): _record(WEB, n, f"127.0.{n // 250}.{n % 250 + 1}") for n in range(1, count + 1)}
    recs[(DB, 1)] = _record(DB, 1, "::1")
    return Zone(ClusterState(
        services={WEB: ServiceSpec(name=WEB, image="x", instances=count), DB: ServiceSpec(name=DB, image="x")},
        instances=recs, revision=77,
    ))


def query(name: str, rdtype: str, *, edns: bool = False, rd: bool = True, cd: bool = False) -> bytes:
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else False, payload=1232)
    q.id = 0x4242
    q.flags = (dns.flags.RD if rd else 0) | (dns.flags.CD if cd else 0)
    return q.to_wire()


def encode(data: bytes, ans: Answer, *, limit: int = 65535, ra: bool = True, any_ttl: int | None = None) -> bytes:
    msg = dns.message.from_wire(data)
    labels = [label for label in msg.question[0].name.labels if label]
    return encode_answer(
        query=data, qname=labels, qtype=msg.question[0].rdtype, rcode=getattr(dns.rcode, ans.rcode), ra=ra,
        answers=ans.answers, authority=ans.authority, additional=ans.additional, rfc8482_ttl=any_ttl,
        edns=msg.edns >= 0, limit=limit,
    )


def texts(section: list[dns.rrset.RRset]) -> list[str]:
    return sorted(f"{rrset.name} {rrset.ttl} {dns.rdatatype.to_text(rrset.rdtype)} {rd}"
                  for rrset in section for rd in rrset)


def expected(rrs: tuple[RR, ...]) -> list[str]:
    def data(rr: RR) -> str:
        d = rr.data
        if rr.rtype == "SRV":
            return f"{d.priority} {d.weight} {d.port} {d.target}"  # type: ignore[union-attr]
        if rr.rtype == "SOA":
            return (f"{d.mname} {d.rname} {d.serial} {d.refresh} {d.retry} {d.expire} "  # type: ignore[union-attr]
                    f"{d.minimum}")  # type: ignore[union-attr]
        return str(d)
    return sorted(f"{rr.name} {rr.ttl} {rr.rtype} {data(rr)}" for rr in rrs)


@pytest.mark.parametrize(("name", "rdtype", "rcode"), [
    ("web.myapp.container.", "A", "NOERROR"),
    ("web.myapp.container.", "SRV", "NOERROR"),
    ("myapp.container.", "SRV", "NOERROR"),
    ("_8080._tcp.web.myapp.container.", "SRV", "NOERROR"),
    ("53.udp.2.web.myapp.container.", "SRV", "NOERROR"),
    ("db.myapp.container.", "AAAA", "NOERROR"),
    ("db.myapp.container.", "A", "NOERROR"),  # NODATA: SOA in authority
    ("container.", "NS", "NOERROR"),
    ("container.", "SOA", "NOERROR"),
    ("nope.myapp.container.", "A", "NXDOMAIN"),
])
def test_every_section_decodes_to_the_zone_records(name: str, rdtype: str, rcode: str) -> None:
    z = zone()
    ans = z.lookup(name, rdtype)
    assert ans.rcode == rcode
    data = query(name, rdtype, edns=True)
    wire = encode(data, ans)
    msg = dns.message.from_wire(wire)
    assert dns.rcode.to_text(msg.rcode()) == rcode
    assert texts(msg.answer) == expected(ans.answers)
    assert texts(msg.authority) == expected(ans.authority)
    assert texts(msg.additional) == expected(ans.additional)
    assert msg.edns == 0 and msg.payload == 1232
    # dnslib, an independent decoder, reads the same message
    other = DNSRecord.parse(wire)
    assert len(other.rr) == len(ans.answers) and len(other.auth) == len(ans.authority)
    assert len(other.ar) == len(ans.additional) + 1


@pytest.mark.parametrize(("rd", "cd", "ra"), [(True, False, True), (False, True, False), (True, True, False)])
def test_header_echoes_id_rd_cd_and_sets_qr_aa(rd: bool, cd: bool, ra: bool) -> None:
    data = query("web.myapp.container.", "A", rd=rd, cd=cd)
    msg = dns.message.from_wire(encode(data, zone().lookup("web.myapp.container.", "A"), ra=ra))
    assert msg.id == 0x4242
    assert bool(msg.flags & dns.flags.QR) and bool(msg.flags & dns.flags.AA)
    assert bool(msg.flags & dns.flags.RD) == rd and bool(msg.flags & dns.flags.CD) == cd
    assert bool(msg.flags & dns.flags.RA) == ra
    assert not msg.flags & (dns.flags.AD | dns.flags.TC)
    assert msg.edns == -1  # no OPT when the query had none


def test_owner_names_point_to_the_question_and_keep_its_case() -> None:
    data = query("WeB.MyApp.Container.", "A")
    wire = encode(data, zone().lookup("web.myapp.container.", "A"))
    msg = dns.message.from_wire(wire)
    assert [str(rrset.name) for rrset in msg.answer] == ["WeB.MyApp.Container."]
    assert wire.count(b"\xc0\x0c") == 3  # each of the three owners is a pointer to the question at 12


def test_srv_targets_are_written_in_full_and_later_names_point_into_them() -> None:
    ans = zone().lookup("web.myapp.container.", "SRV")
    wire = encode(query("web.myapp.container.", "SRV"), ans)
    for n in (1, 2, 3):  # RFC 2782: no compression in the target
        assert struct.pack("!HHH", 0, 0, 30000 + n) + f"\x01{n}\x03web\x05myapp\x09container\x00".encode() in wire
    uncompressed = sum(len(rr.name) + 1 + 10 + (4 if rr.rtype == "A" else 0) for rr in ans.additional)
    assert len(wire) < 12 + 25 + 6 * 40 + uncompressed  # the additional A owners are 2-byte pointers


@pytest.mark.parametrize("edns", [False, True])
def test_too_large_is_truncated_to_the_question(edns: bool) -> None:
    z = zone(60)
    data = query("web.myapp.container.", "SRV", edns=edns)
    full = encode(data, z.lookup("web.myapp.container.", "SRV"))
    assert len(full) > 1232
    wire = encode(data, z.lookup("web.myapp.container.", "SRV"), limit=1232)
    msg = dns.message.from_wire(wire)
    assert msg.flags & dns.flags.TC and not msg.answer and not msg.authority and not msg.additional
    assert str(msg.question[0].name) == "web.myapp.container." and msg.id == 0x4242
    assert (msg.edns == 0) == edns
    assert wire[12:] == data[12:]  # the question, then our OPT exactly where the query had its own


def test_any_gets_the_rfc8482_answer() -> None:
    data = query("Web.myapp.container.", "ANY")
    msg = dns.message.from_wire(encode(data, Answer(rcode="NOERROR"), any_ttl=5))
    assert texts(msg.answer) == ['Web.myapp.container. 5 HINFO "RFC8482" ""']


def test_pointers_never_exceed_their_14_bits() -> None:
    """Past offset 16383 a name cannot be a compression target: later names are written out."""
    z = zone(400)
    ans = z.lookup("myapp.container.", "SRV")
    wire = encode(query("myapp.container.", "SRV"), ans)
    assert len(wire) > 0x4000
    msg = dns.message.from_wire(wire)
    assert texts(msg.answer) == sorted(
        f"myapp.container. 5 SRV {d}" for d in (rr.data for rr in ans.answers)
        for d in [f"{d.priority} {d.weight} {d.port} {d.target}"]  # type: ignore[union-attr]
    )
    assert texts(msg.additional) == expected(ans.additional)
