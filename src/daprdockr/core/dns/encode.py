"""Zone answers on the wire, without a DNS library.  Pure.

:func:`encode_answer` turns one :class:`~daprdockr.core.dns.zone.Answer`'s records into a complete
response message: the header (id, opcode, RD and CD echoed from the query; QR and AA set; AD
clear), the question as the query spelled it, the answer, authority and additional sections, and
our EDNS0 OPT record when the query had one.  A message larger than ``limit`` is replaced by the
truncated form (TC=1, the question, no records but the OPT), so the client retries over TCP.

Names are compressed (RFC 1035 4.1.4) against every name written before them, the question's
included, so an answer's owner names become a pointer to the question and keep the case the
query used.  SRV targets are written in full, as RFC 2782 requires, but later names may point
into them.  The cost is linear in the number of records, paid once per answer: the DNS server
encodes an answer the first time it serves it and caches it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from daprdockr.core.dns.guard import OPT_RR
from daprdockr.core.dns.zone import RR, Soa, Srv

TYPES = {"A": 1, "NS": 2, "SOA": 6, "AAAA": 28, "SRV": 33}
HINFO = 13
CLASS_IN = b"\x00\x01"
MAX_POINTER = 0x3FFF  # the largest offset a compression pointer can hold
RFC8482_HINFO = b"\x07RFC8482\x00"  # the answer to ANY (RFC 8482 4.2): CPU "RFC8482", OS ""


class _Writer:
    """A message being written, with the offset of every name suffix written so far (by labels,
    lower case) and of every zone name (by its text: one dict lookup for a repeated name)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.offsets: dict[tuple[bytes, ...], int] = {}
        self.names: dict[str, int] = {}

    def name(self, labels: Sequence[bytes], *, compress: bool = True) -> int:
        """Write a name; returns the offset where it can be found (its start, or what it points to)."""
        keys = tuple(label.lower() for label in labels)
        start = len(self.out)
        for i in range(len(keys)):
            suffix = keys[i:]
            if compress:
                at = self.offsets.get(suffix)
                if at is not None:
                    self.out += (0xC000 | at).to_bytes(2, "big")
                    return at if i == 0 else start
            if len(self.out) <= MAX_POINTER:
                self.offsets.setdefault(suffix, len(self.out))
            self.out.append(len(labels[i]))
            self.out += labels[i]
        self.out.append(0)
        return start

    def zone_name(self, name: str, *, compress: bool = True) -> None:
        """Write an absolute zone name (lower case, ASCII, trailing dot)."""
        if compress:
            at = self.names.get(name)
            if at is not None:
                self.out += (0xC000 | at).to_bytes(2, "big")
                return
        at = self.name(_labels(name), compress=compress)
        if at <= MAX_POINTER:
            self.names.setdefault(name, at)

    def record(self, owner: str | Sequence[bytes], rtype: int, ttl: int) -> int:
        """Owner, type, class IN, TTL and a zero RDLENGTH; returns where RDATA starts."""
        if isinstance(owner, str):
            self.zone_name(owner)
        else:
            self.name(owner)
        self.out += rtype.to_bytes(2, "big") + CLASS_IN + ttl.to_bytes(4, "big") + b"\x00\x00"
        return len(self.out)

    def end_record(self, start: int) -> None:
        self.out[start - 2:start] = (len(self.out) - start).to_bytes(2, "big")


def _labels(name: str) -> list[bytes]:
    """The labels of an absolute zone name (validated, ASCII): ``"a.b."`` -> ``[b"a", b"b"]``."""
    stripped = name.rstrip(".")
    return [label.encode("ascii") for label in stripped.split(".")] if stripped else []


def _address(text: str, rtype: str) -> bytes:
    if rtype == "A":
        return bytes(int(octet) for octet in text.split("."))
    return ipaddress.IPv6Address(text).packed


def _write_rr(w: _Writer, rr: RR) -> None:
    start = w.record(rr.name, TYPES[rr.rtype], rr.ttl)
    data = rr.data
    if isinstance(data, Srv):
        w.out += data.priority.to_bytes(2, "big") + data.weight.to_bytes(2, "big") + data.port.to_bytes(2, "big")
        w.zone_name(data.target, compress=False)
    elif isinstance(data, Soa):
        w.zone_name(data.mname)
        w.zone_name(data.rname)
        for value in (data.serial, data.refresh, data.retry, data.expire, data.minimum):
            w.out += value.to_bytes(4, "big")
    elif rr.rtype == "NS":
        w.zone_name(data)
    else:
        w.out += _address(data, rr.rtype)
    w.end_record(start)


def _header(query: bytes, *, rcode: int, ra: bool, tc: bool, counts: tuple[int, int, int, int]) -> bytes:
    flags = 0x80 | (query[2] & 0x79) | 0x04 | (0x02 if tc else 0)  # QR, opcode and RD echoed, AA, TC
    low = (0x80 if ra else 0) | (query[3] & 0x10) | rcode  # RA, CD echoed, Z and AD clear
    return query[:2] + bytes((flags, low)) + b"".join(c.to_bytes(2, "big") for c in counts)


def encode_answer(
    *,
    query: bytes,
    qname: Sequence[bytes],
    qtype: int,
    rcode: int,
    ra: bool,
    answers: Sequence[RR] = (),
    authority: Sequence[RR] = (),
    additional: Sequence[RR] = (),
    rfc8482_ttl: int | None = None,
    edns: bool,
    limit: int,
) -> bytes:
    """The response to ``query`` (its header and question's type) whose question name has the
    labels ``qname``.  With ``rfc8482_ttl`` (the answer to ANY) the answer section is one HINFO
    "RFC8482" record for the question name with that TTL, and ``answers`` is not used.

    At most ``limit`` bytes: a longer message is returned truncated (TC=1, no records).
    """
    w = _Writer()
    w.out += bytes(12)
    w.name(qname)
    w.out += qtype.to_bytes(2, "big") + CLASS_IN
    question_end = len(w.out)
    if rfc8482_ttl is not None:
        start = w.record(qname, HINFO, rfc8482_ttl)
        w.out += RFC8482_HINFO
        w.end_record(start)
        an = 1
    else:
        for rr in answers:
            _write_rr(w, rr)
        an = len(answers)
    for rr in (*authority, *additional):
        _write_rr(w, rr)
    if edns:
        w.out += OPT_RR
    counts = (1, an, len(authority), len(additional) + edns)
    if len(w.out) <= limit:
        w.out[:12] = _header(query, rcode=rcode, ra=ra, tc=False, counts=counts)
        return bytes(w.out)
    head = _header(query, rcode=rcode, ra=ra, tc=True, counts=(1, 0, 0, int(edns)))
    return head + bytes(w.out[12:question_end]) + (OPT_RR if edns else b"")
