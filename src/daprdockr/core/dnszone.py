"""The ``.container`` DNS zone, kept from the cluster state per service.  Pure: no I/O, no DNS library.

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
from daprdockr.core.names import ServiceName
from daprdockr.core.routing import changed_specs
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
    refs: int = 0  # how many parts name it (a name exists while any does)
    records: dict[RRType, dict[RR, int]] = field(default_factory=dict)  # rr -> how many parts give it


Part = tuple[str, RR | None]  # (owner name, record or None: the name exists, with no record)


def _addr_type(address: str) -> RRType | None:
    try:
        return "AAAA" if ipaddress.ip_address(address).version == 6 else "A"
    except ValueError:
        return None


class Zone:
    """Lookup table for one domain, kept per service: :meth:`update` redoes only the services whose
    spec or records changed since the last state (:func:`~daprdockr.core.routing.changed_specs`).

    Each service contributes *parts* (a record under a name, or just the name); a name and a
    record are counted, so a group's name and its deduplicated addresses stay while any of its
    services gives them."""

    def __init__(self, state: ClusterState, *, domain: str = "container", ttl: int = 5) -> None:
        self.domain = domain.strip(".").lower()
        self.apex = f"{self.domain}."
        self.ttl = ttl
        self._nodes: dict[str, _Node] = {}
        self._parts: dict[ServiceName, list[Part]] = {}
        self._state: ClusterState | None = None
        self.soa = self._soa(state)
        self._add((self.apex, self.soa))
        self._add((self.apex, RR(name=self.apex, rtype="NS", ttl=ttl, data=f"ns.{self.apex}")))
        self._add((f"ns.{self.apex}", RR(name=f"ns.{self.apex}", rtype="A", ttl=ttl, data="127.0.0.1")))
        self.update(state)

    def _soa(self, state: ClusterState) -> RR:
        return RR(name=self.apex, rtype="SOA", ttl=self.ttl,
                  data=Soa(mname=f"ns.{self.apex}", rname=f"hostmaster.{self.apex}",
                           serial=state.revision & 0xFFFFFFFF, minimum=self.ttl))

    def update(self, state: ClusterState) -> None:
        """Serve ``state``: the parts of the services that changed are taken out and put in again."""
        old = self._state
        if old is state:
            return
        names = set(state.services) | set(state.index.by_service) if old is None else changed_specs(old, state)
        self._state = state
        soa = self._soa(state)
        if soa != self.soa:
            self._remove((self.apex, self.soa))
            self.soa = soa
            self._add((self.apex, soa))
        for name in names:
            for part in self._parts.pop(name, ()):
                self._remove(part)
            parts = self._service_parts(state, name)
            if parts:
                self._parts[name] = parts
                for part in parts:
                    self._add(part)

    def _add(self, part: Part) -> None:
        owner, rr = part
        node = self._nodes.get(owner)
        if node is None:
            node = self._nodes[owner] = _Node()
        node.refs += 1
        if rr is not None:
            bucket = node.records.setdefault(rr.rtype, {})
            bucket[rr] = bucket.get(rr, 0) + 1

    def _remove(self, part: Part) -> None:
        owner, rr = part
        node = self._nodes[owner]
        if rr is not None:
            bucket = node.records[rr.rtype]
            bucket[rr] -= 1
            if not bucket[rr]:
                del bucket[rr]
                if not bucket:
                    del node.records[rr.rtype]
        node.refs -= 1
        if not node.refs:
            del self._nodes[owner]

    def _service_parts(self, state: ClusterState, name: ServiceName) -> list[Part]:
        group = f"{name.group}.{self.apex}"
        svc = f"{name.service}.{group}"
        parts: list[Part] = [(svc, None), (group, None)] if name in state.services else []
        records = state.index.of_service(name)
        for number in sorted(records):
            rec = records[number]
            if rec.routable:
                parts.extend(self._instance_parts(rec, svc=svc, group=group))
        return parts

    def _instance_parts(self, rec: InstanceRecord, *, svc: str, group: str) -> list[Part]:
        rtype = _addr_type(rec.address)
        if rtype is None:
            return []
        inst = f"{rec.number}.{svc}"
        parts: list[Part] = [(owner, RR(name=owner, rtype=rtype, ttl=self.ttl, data=rec.address))
                             for owner in (inst, svc, group)]
        for key, host_port in rec.ports:
            port, _, proto = key.partition("/")
            srv = Srv(priority=0, weight=0, port=host_port, target=inst)
            parts.extend((owner, RR(name=owner, rtype="SRV", ttl=self.ttl, data=srv))
                         for owner in (inst, svc, group, f"_{port}._{proto}.{svc}", f"{port}.{proto}.{inst}"))
            parts.extend(((f"_{proto}.{svc}", None), (f"{proto}.{inst}", None)))  # empty non-terminals
        return parts

    def names(self) -> dict[str, dict[RRType, frozenset[RR]]]:
        """Every name of the zone and its records by type (for tests and diagnostics: linear)."""
        return {name: {t: frozenset(rrs) for t, rrs in node.records.items()} for name, node in self._nodes.items()}

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
