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
the SOA.  A name the spec promises is never NXDOMAIN: a service that exists but has no running
instance is NODATA, and so are an instance's names (``<n>.<service>.<group>`` and its port forms)
for every number up to the spec's ``instances``, while the instance starts, fails or moves to
another node.  Negative answers carry the SOA with a TTL and minimum of :data:`NEGATIVE_TTL`
(1 s), so that a cache in front does not keep a vanished answer longer than a move takes.  The
adapter (:mod:`daprdockr.dnsserver`) encodes :class:`Answer` values to wire format.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Literal

from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from daprdockr.core.routing import changed_specs
from daprdockr.core.state import ClusterState

NEGATIVE_TTL = 1  # seconds a negative answer (NXDOMAIN, NODATA) may be cached (RFC 2308: the SOA's TTL and minimum)

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
    minimum: int = NEGATIVE_TTL


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
    """Lookup table for one domain, kept per instance: :meth:`update` looks only at the services whose
    spec or records changed since the last state (:func:`~daprdockr.core.routing.changed_specs`),
    and in those redoes only the instances whose record changed.

    Each service contributes *parts* (a record under a name, or just the name); a name and a
    record are counted, so a group's name and its deduplicated addresses stay while any of its
    services gives them."""

    def __init__(self, state: ClusterState, *, domain: str = "container", ttl: int = 5) -> None:
        self.domain = domain.strip(".").lower()
        self.apex = f"{self.domain}."
        self.ttl = ttl
        self._nodes: dict[str, _Node] = {}
        self._parts: dict[ServiceName, dict[int, list[Part]]] = {}  # each routed instance's parts
        self._named: set[ServiceName] = set()  # services whose names exist (they have a spec)
        self._state: ClusterState | None = None
        self.soa = self._soa(state)
        self.negative_soa = replace(self.soa, ttl=min(self.ttl, NEGATIVE_TTL))  # (in negative answers)
        self._add((self.apex, self.soa))
        self._add((self.apex, RR(name=self.apex, rtype="NS", ttl=ttl, data=f"ns.{self.apex}")))
        self._add((f"ns.{self.apex}", RR(name=f"ns.{self.apex}", rtype="A", ttl=ttl, data="127.0.0.1")))
        self.update(state)

    def _soa(self, state: ClusterState) -> RR:
        return RR(name=self.apex, rtype="SOA", ttl=self.ttl,
                  data=Soa(mname=f"ns.{self.apex}", rname=f"hostmaster.{self.apex}",
                           serial=state.revision & 0xFFFFFFFF, minimum=min(self.ttl, NEGATIVE_TTL)))

    def update(self, state: ClusterState) -> None:
        """Serve ``state``: in each service that changed, the parts of the instances whose record
        changed (another object: the mirror keeps the others) are taken out and put in again."""
        old = self._state
        if old is state:
            return
        names = set(state.services) | set(state.index.by_service) if old is None else changed_specs(old, state)
        self._state = state
        soa = self._soa(state)
        if soa != self.soa:
            self._replace((self.apex, self.soa), (self.apex, soa))
            self.soa = soa
            self.negative_soa = replace(soa, ttl=min(self.ttl, NEGATIVE_TTL))
        for name in names:
            self._update_service(name, old, state)

    def _update_service(self, name: ServiceName, old: ClusterState | None, state: ClusterState) -> None:
        group = f"{name.group}.{self.apex}"
        svc = f"{name.service}.{group}"
        exists = name in state.services
        if exists and name not in self._named:
            self._named.add(name)
            self._add((svc, None))
            self._add((group, None))
        elif not exists and name in self._named:
            self._named.discard(name)
            self._remove((svc, None))
            self._remove((group, None))
        before = old.index.of_service(name) if old is not None else {}
        now = state.index.of_service(name)
        parts = self._parts.setdefault(name, {})
        for number in sorted(set(before) | set(now)):
            rec = now.get(number)
            if rec is before.get(number) and (number in parts or rec is None or not rec.routable):
                continue
            for part in parts.pop(number, ()):
                self._remove(part)
            if rec is not None and rec.routable:
                parts[number] = new = self._instance_parts(rec, svc=svc, group=group)
                for part in new:
                    self._add(part)
        if not parts:
            del self._parts[name]

    def _replace(self, old: Part, new: Part) -> None:
        self._remove(old)
        self._add(new)

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

    def _promised(self, name: str) -> bool:
        """Whether ``name`` (absolute, lower case) is an instance name the spec promises:
        ``<n>.<service>.<group>`` or ``<port>.<proto>.<n>.<service>.<group>`` with ``n`` from 1 to
        the service's ``instances`` (the instance may be starting or moving: NODATA, not NXDOMAIN)."""
        if self._state is None or not name.endswith("." + self.apex):
            return False
        labels = name[:-len(self.apex) - 1].split(".")
        port = ""
        if len(labels) == 5:
            port, labels = f"{labels[0]}/{labels[1]}", labels[2:]
        if len(labels) != 3 or not labels[0].isdigit() or len(labels[0]) > 9:
            return False
        spec = self._state.services.get(ServiceName(group=labels[2], service=labels[1]))
        return (spec is not None and 1 <= int(labels[0]) <= spec.instances
                and (not port or any(str(p) == port for p in spec.container_ports())))

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
            return Answer(rcode="NOERROR" if self._promised(name) else "NXDOMAIN", authority=(self.negative_soa,))
        rrs = tuple(node.records.get(qtype, ()))  # type: ignore[call-overload]
        if not rrs:
            return Answer(rcode="NOERROR", authority=(self.negative_soa,))
        additional: tuple[RR, ...] = ()
        if qtype == "SRV":
            targets = sorted({rr.data.target for rr in rrs if isinstance(rr.data, Srv)})
            additional = tuple(
                rr for t in targets for rt in ("A", "AAAA") for rr in self._nodes[t].records.get(rt, ())
            )
        return Answer(rcode="NOERROR", answers=rrs, additional=additional)
