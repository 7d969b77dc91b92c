"""The ``.container`` DNS zone, built from the cluster state.  Pure: no I/O, no DNS library.

Names (``<domain>`` defaults to ``container``; all names case-insensitive)::

    <n>.<service>.<group>.<domain>          A/AAAA  address of the host running instance n
                                            SRV     one per published port:
                                                    0 0 <host port> <n>.<service>.<group>.<domain>.
    <port>.<tcp|udp>.<n>.<service>.<group>.<domain>
                                            SRV     0 0 <host port of <port>> <n>.<service>.<group>.<domain>.
                                                    (the original DaprDockr's form)
    <service>.<group>.<domain>              A/AAAA  every host running an instance (deduplicated)
                                            SRV     every running instance's ports, as above
    _<port>._<tcp|udp>.<service>.<group>.<domain>
                                            SRV     one per running instance:
                                                    0 0 <host port of <port>> <n>.<service>.<group>.<domain>.
    <group>.<domain>                        A/AAAA, SRV  the same over every service of the group
    <domain>                                SOA, NS

Only instances in state ``running`` are answered.  A name that exists with no record of the asked
type answers NOERROR with no records (NODATA) plus the SOA; an unknown name answers NXDOMAIN plus
the SOA.  A service that exists but has no running instance is NODATA, not NXDOMAIN.  The adapter
(:mod:`daprdockr.dnsserver`) encodes :class:`Answer` values to wire format.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from daprdockr.core.model import InstanceRecord
from daprdockr.core.state import ClusterState

RRType = Literal["A", "AAAA", "SRV", "SOA", "NS"]
Rcode = Literal["NOERROR", "NXDOMAIN", "REFUSED"]


@dataclass(frozen=True, slots=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str  # absolute, with trailing dot


@dataclass(frozen=True, slots=True)
class Soa:
    mname: str
    rname: str
    serial: int
    refresh: int = 60
    retry: int = 10
    expire: int = 600
    minimum: int = 5


RData = str | Srv | Soa  # str: an address (A/AAAA) or a host name (NS)


@dataclass(frozen=True, slots=True)
class RR:
    name: str  # absolute, lower case, trailing dot
    rtype: RRType
    ttl: int
    data: RData


@dataclass(frozen=True, slots=True)
class Answer:
    rcode: Rcode
    answers: tuple[RR, ...] = ()
    authority: tuple[RR, ...] = ()
    additional: tuple[RR, ...] = ()
    authoritative: bool = True


@dataclass(slots=True)
class _Node:
    records: dict[RRType, list[RR]] = field(default_factory=dict)

    def add(self, rr: RR) -> None:
        bucket = self.records.setdefault(rr.rtype, [])
        if rr not in bucket:
            bucket.append(rr)


def _addr_type(address: str) -> RRType | None:
    try:
        return "AAAA" if ipaddress.ip_address(address).version == 6 else "A"
    except ValueError:
        return None


class Zone:
    """Lookup table for one domain; build a new one per state change (cheap, O(instances))."""

    def __init__(self, state: ClusterState, *, domain: str = "container", ttl: int = 5) -> None:
        self.domain = domain.strip(".").lower()
        self.apex = f"{self.domain}."
        self.ttl = ttl
        self.soa = RR(
            name=self.apex, rtype="SOA", ttl=ttl,
            data=Soa(mname=f"ns.{self.apex}", rname=f"hostmaster.{self.apex}", serial=state.revision & 0xFFFFFFFF,
                     minimum=ttl),
        )
        self._nodes: dict[str, _Node] = {}
        apex = self._node(self.apex)
        apex.add(self.soa)
        apex.add(RR(name=self.apex, rtype="NS", ttl=ttl, data=f"ns.{self.apex}"))
        self._node(f"ns.{self.apex}").add(RR(name=f"ns.{self.apex}", rtype="A", ttl=ttl, data="127.0.0.1"))
        for name in state.services:
            self._node(f"{name.service}.{name.group}.{self.apex}")
            self._node(f"{name.group}.{self.apex}")
        for rec in sorted(state.instances.values(), key=lambda r: (str(r.service), r.number)):
            if rec.routable:
                self._add_instance(rec)

    def _node(self, name: str) -> _Node:
        node = self._nodes.get(name)
        if node is None:
            node = self._nodes[name] = _Node()
        return node

    def _add_instance(self, rec: InstanceRecord) -> None:
        rtype = _addr_type(rec.address)
        if rtype is None:
            return
        group = f"{rec.service.group}.{self.apex}"
        svc = f"{rec.service.service}.{group}"
        inst = f"{rec.number}.{svc}"
        for owner in (inst, svc, group):
            self._node(owner).add(RR(name=owner, rtype=rtype, ttl=self.ttl, data=rec.address))
        for key, host_port in rec.ports:
            port, _, proto = key.partition("/")
            srv = Srv(priority=0, weight=0, port=host_port, target=inst)
            for owner in (inst, svc, group, f"_{port}._{proto}.{svc}", f"{port}.{proto}.{inst}"):
                self._node(owner).add(RR(name=owner, rtype="SRV", ttl=self.ttl, data=srv))
            self._node(f"_{proto}.{svc}")  # empty non-terminals
            self._node(f"{proto}.{inst}")

    def in_zone(self, qname: str) -> bool:
        name = qname.lower()
        return name == self.apex or name.endswith("." + self.apex)

    def lookup(self, qname: str, qtype: str) -> Answer:
        """The answer for ``qname`` (absolute, any case) and ``qtype`` (``"A"``, ``"SRV"``, ...)."""
        name = qname.lower()
        if not name.endswith("."):
            name += "."
        node = self._nodes.get(name)
        if node is None:
            return Answer(rcode="NXDOMAIN", authority=(self.soa,))
        rrs = tuple(node.records.get(qtype, ()))  # type: ignore[call-overload]
        if not rrs:
            return Answer(rcode="NOERROR", authority=(self.soa,))
        additional: tuple[RR, ...] = ()
        if qtype == "SRV":
            targets = sorted({rr.data.target for rr in rrs if isinstance(rr.data, Srv)})
            additional = tuple(
                rr for t in targets for rt in ("A", "AAAA") for rr in self._nodes[t].records.get(rt, ())
            )
        return Answer(rcode="NOERROR", answers=rrs, additional=additional)
