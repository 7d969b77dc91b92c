"""DNS wire format, the parts that need no DNS library: the hot path's question parser.  Pure.

:func:`parse_question` reads a plain query (one question, at most an EDNS0 OPT record) straight
from the bytes and returns the key of the responder's answer cache; anything else takes the slow
path (:mod:`daprdockr.core.dns.guard` checks it first, then dnslib parses it).
"""

from __future__ import annotations

Address = tuple[str, int]


def parse_question(data: bytes) -> tuple[bytes, int, int] | None:
    """Fast parse of a plain query: (cache key, end of question, EDNS size or 0), or None.

    None means: not the common shape (take the slow path).  No exceptions.
    """
    n = len(data)
    if n < 17 or n > 1024:
        return None
    flags = data[2]
    if flags & 0xF8:  # QR set or opcode != 0
        return None
    if data[4:10] != b"\x00\x01\x00\x00\x00\x00":
        return None
    arcount = (data[10] << 8) | data[11]
    if arcount > 1:
        return None
    i = 12
    while True:
        if i >= n:
            return None
        length = data[i]
        if length == 0:
            break
        if length & 0xC0:
            return None
        i += length + 1
    qend = i + 5
    if qend > n:
        return None
    edns = 0
    if arcount == 1:
        # root name, type OPT(41), class = UDP size, ttl 4, rdlen 2, rdata
        if qend + 11 > n or data[qend] != 0 or data[qend + 1:qend + 3] != b"\x00\x29":
            return None
        edns = max(512, (data[qend + 3] << 8) | data[qend + 4])
        rdlen = (data[qend + 9] << 8) | data[qend + 10]
        if qend + 11 + rdlen != n:
            return None
    elif qend != n:
        return None
    return bytes(data[12:qend]) + bytes((flags & 0x01, edns >> 8 & 0xFF, edns & 0xFF)), qend, edns
