"""core.dns.guard: the DNS server's pure defences (precheck, reply headers, client keys, RRL, self-upstreams)."""

from __future__ import annotations

import struct
from ipaddress import ip_network

import pytest

from daprdockr.core.dns.guard import (
    EDNS_SIZE,
    FORMERR,
    LOOPBACK,
    NOTIMP,
    Check,
    ResponseRateLimiter,
    RrlPolicy,
    client_key,
    error_reply,
    local_networks,
    name_end,
    precheck,
    reaches_self,
    truncated_reply,
    udp_limit,
)


def header(*, ident: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, qd, an, ns, ar)


QUESTION = b"\x01a\x09container\x00\x00\x01\x00\x01"  # a.container A IN: 17 bytes


def opt(size: int = 1232, rdata: bytes = b"") -> bytes:
    return b"\x00\x00\x29" + struct.pack("!H", size) + b"\x00\x00\x00\x00" + struct.pack("!H", len(rdata)) + rdata


def option(code: int, value: bytes) -> bytes:
    return struct.pack("!HH", code, len(value)) + value


QEND = 12 + len(QUESTION)


@pytest.mark.parametrize(
    ("data", "offset", "expected"),
    [
        (b"\x00", 0, 1),  # root
        (b"\x01a\x00", 0, 3),
        (b"\x01a\x00\x01b\xc0\x00", 3, 7),  # label then pointer back: ends after the pointer
        (b"\x01a\x00\xc0\x00", 3, 5),  # a bare pointer
        (b"\x01a\x00\xc0\x00\xc0\x03", 5, 7),  # pointer to a pointer to a name: two hops
        (b"\x01a", 0, -1),  # runs off the end
        (b"\x05ab", 0, -1),  # label longer than the data
        (b"\xc0", 0, -1),  # half a pointer
        (b"\xc0\x00", 0, -1),  # points at itself
        (b"\x01a\xc0\x00", 0, -1),  # points back into its own segment (a loop)
        (b"\x00\xc0\x03\xc0\x01", 3, -1),  # two pointers that point at each other
        (b"\x00\x00\xc0\x05", 2, -1),  # forward pointer
        (b"\x41" + b"a" * 65 + b"\x00", 0, -1),  # 0x40 label type
        (b"\x81a\x00", 0, -1),  # 0x80 label type
        (b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63 + b"\x3d" + b"d" * 61 + b"\x00", 0, 255),
        (b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63 + b"\x3e" + b"d" * 62 + b"\x00", 0, -1),
    ],
)
def test_name_end(data: bytes, offset: int, expected: int) -> None:
    assert name_end(data, offset) == expected


def test_name_end_bounds_hops() -> None:
    chain = b"\x00" + b"".join(struct.pack("!H", 0xC000 | (2 * i - 1 if i else 0)) for i in range(40))
    # the pointer at 1 points at 0 (root); the pointer at 2i+1 points at 2i-1: a chain of 40 hops
    assert name_end(chain, 3) == 5  # two hops
    assert name_end(chain, 2 * 39 + 1) == -1  # 40 hops: too many
    assert name_end(chain, 2 * 39 + 1, max_hops=64) == 2 * 39 + 3


@pytest.mark.parametrize(
    ("data", "tcp", "expected"),
    [
        (header() + QUESTION, False, Check(qend=QEND)),
        (header(ar=1) + QUESTION + opt(4096), False, Check(qend=QEND, edns=4096)),
        (header(ar=1) + QUESTION + opt(100), False, Check(qend=QEND, edns=512)),  # below 512 counts as 512
        (header(ar=1) + QUESTION + opt(1232, option(10, b"c" * 8) + option(12, b"\x00" * 400)), False,
         Check(qend=QEND, edns=1232)),  # a cookie and padding
        (header(flags=0x0000) + QUESTION, True, Check(qend=QEND)),
        (b"", False, Check(drop=True)),
        (b"\x12\x34\x01\x00", False, Check(drop=True)),  # no readable header
        (header(flags=0x8180) + QUESTION, False, Check(drop=True)),  # a response
        (header(flags=0x2800) + QUESTION, False, Check(rcode=NOTIMP)),  # UPDATE
        (header(flags=0x2000) + QUESTION, False, Check(rcode=NOTIMP)),  # NOTIFY
        (header(qd=0), False, Check(rcode=FORMERR)),
        (header(qd=2) + QUESTION * 2, False, Check(rcode=FORMERR)),
        (header(qd=450) + QUESTION * 450, True, Check(rcode=FORMERR)),
        (header(an=1) + QUESTION, False, Check(rcode=FORMERR)),
        (header(ns=1) + QUESTION, False, Check(rcode=FORMERR)),
        (header(ar=2) + QUESTION + opt() + opt(), False, Check(rcode=FORMERR)),
        (header() + QUESTION[:-1], False, Check(rcode=FORMERR)),  # question cut short
        (header() + b"\x05abc", False, Check(rcode=FORMERR)),
        (header() + QUESTION + b"\x00", False, Check(rcode=FORMERR)),  # trailing byte
        (header(ar=1) + QUESTION, False, Check(rcode=FORMERR)),  # ARCOUNT 1, no record
        (header(ar=1) + QUESTION + opt()[:-1], False, Check(rcode=FORMERR)),
        (header(ar=1) + QUESTION + opt() + b"\x00", False, Check(rcode=FORMERR)),  # trailing byte
        (header(ar=1) + QUESTION + b"\x00\x00\x01\x00\x01\x00\x00\x00\x00\x00\x04\x7f\x00\x00\x01", False,
         Check(rcode=FORMERR)),  # an A record, not OPT
        (header(ar=1) + QUESTION + b"\x01x\x00" + opt()[1:], False, Check(rcode=FORMERR)),  # OPT not at root
        (header(ar=1) + QUESTION + opt(1232, option(10, b"c" * 8)[:-1]), False, Check(rcode=FORMERR)),
        (header(ar=1) + QUESTION + opt(1232, option(1, b"") * 17), False, Check(rcode=FORMERR)),  # too many
        (header() + b"\xc0\x0c\x00\x01\x00\x01", False, Check(rcode=FORMERR)),  # pointer loop in the question
        (header() + b"\x3f" + b"a" * 63 + QUESTION, False, Check(qend=QEND + 64)),  # long names are fine
        (header() + (b"\x3f" + b"a" * 63) * 3 + QUESTION, False, Check(qend=QEND + 192)),
    ],
)
def test_precheck(data: bytes, tcp: bool, expected: Check) -> None:
    assert precheck(data, tcp=tcp) == expected


def test_precheck_udp_size_without_edns() -> None:
    # a query can only be that large with EDNS padding or options; without an OPT record over UDP: FORMERR
    padded = header(ar=1) + QUESTION + opt(1232, option(12, b"\x00" * 600))
    assert precheck(padded, tcp=False) == Check(qend=QEND, edns=1232)
    big = header() + QUESTION + b"\x00" * 600
    assert precheck(big, tcp=False) == Check(rcode=FORMERR)
    assert precheck(big, tcp=True) == Check(rcode=FORMERR)  # trailing garbage either way
    # the finding's shape: several KB over UDP without OPT is refused whatever follows the header
    assert precheck(header(qd=450) + b"\x00" * 6000, tcp=False) == Check(rcode=FORMERR)


def test_finding_packet_is_refused_by_the_header() -> None:
    """450 questions whose names follow a compression chain: FORMERR from the header alone."""
    packet = header(qd=450) + b"\xc0\x0c\x00\x01\x00\x01" * 450
    assert precheck(packet, tcp=False) == Check(rcode=FORMERR)


@pytest.mark.parametrize(
    ("data", "rcode", "ra", "expected"),
    [
        (header(flags=0x0100) + QUESTION, FORMERR, True, b"\x12\x34\x81\x81" + bytes(8)),
        (header(flags=0x0000) + QUESTION, FORMERR, False, b"\x12\x34\x80\x01" + bytes(8)),
        (header(flags=0x2910), NOTIMP, True, b"\x12\x34\xa9\x84" + bytes(8)),  # opcode and RD echoed
        (b"\x12\x34\x01", FORMERR, True, None),  # no header: no answer
    ],
)
def test_error_reply(data: bytes, rcode: int, ra: bool, expected: bytes | None) -> None:
    assert error_reply(data, rcode, ra=ra) == expected


def test_truncated_reply() -> None:
    query = header(flags=0x0100) + QUESTION
    reply = truncated_reply(query, qend=QEND, rcode=0, ra=True, edns=False)
    assert reply == b"\x12\x34\x83\x80\x00\x01\x00\x00\x00\x00\x00\x00" + QUESTION
    with_opt = header(flags=0x0100, ar=1) + QUESTION + opt(4096, option(10, b"c" * 8))
    reply = truncated_reply(with_opt, qend=QEND, rcode=3, ra=False, edns=True)
    assert reply == b"\x12\x34\x83\x03\x00\x01\x00\x00\x00\x00\x00\x01" + QUESTION + opt(EDNS_SIZE)


@pytest.mark.parametrize(
    ("edns", "expected"),
    [(0, 512), (512, 512), (1000, 1000), (1232, 1232), (4096, EDNS_SIZE), (65535, EDNS_SIZE)],
)
def test_udp_limit(edns: int, expected: int) -> None:
    assert udp_limit(edns) == expected


ALLOW = (ip_network("127.0.0.0/8"), ip_network("::1/128"), ip_network("172.17.0.0/16"))


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", ""),
        ("127.3.2.1", ""),
        ("::1", ""),
        ("::ffff:127.0.0.1", ""),  # an IPv4 client on a dual-stack socket
        ("172.17.0.5", ""),
        ("172.18.0.5", "172.18.0.0/24"),
        ("192.0.2.77", "192.0.2.0/24"),
        ("::ffff:192.0.2.77", "192.0.2.0/24"),
        ("2001:db8:1:2:3::4", "2001:db8:1::/56"),
        ("2001:db8:1:ff:3::4", "2001:db8:1::/56"),
        ("2001:db8:1:100::4", "2001:db8:1:100::/56"),
        ("fe80::1%eth0", "fe80::/56"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_client_key(host: str, expected: str) -> None:
    assert client_key(host, allow=ALLOW) == expected


def test_client_key_default_allow_is_loopback() -> None:
    assert (ip_network("127.0.0.0/8"), ip_network("::1/128")) == LOOPBACK
    assert client_key("127.0.0.9", allow=LOOPBACK) == ""
    assert client_key("172.17.0.5", allow=LOOPBACK) == "172.17.0.0/24"
    assert client_key("127.0.0.9", allow=[]) == "127.0.0.0/24"


def test_rrl_burst_then_rate_with_slip() -> None:
    rrl = ResponseRateLimiter(RrlPolicy(rate=10.0, burst=5, slip=2))
    verdicts = [rrl.check("k", now=0.0) for _ in range(9)]
    assert verdicts == ["send"] * 5 + ["drop", "slip", "drop", "slip"]
    assert rrl.check("other", now=0.0) == "send"  # buckets are per key
    assert rrl.check("k", now=0.05) in ("drop", "slip")  # half a token
    assert rrl.check("k", now=0.1) == "send"  # one token per 1/rate seconds
    assert rrl.check("k", now=0.1) in ("drop", "slip")
    assert [rrl.check("k", now=100.0) for _ in range(6)][-2:] == ["send", "drop"]  # refills to the burst only


@pytest.mark.parametrize(
    ("slip", "expected"), [(0, ["drop"] * 4), (1, ["slip"] * 4), (3, ["drop", "drop", "slip", "drop"])]
)
def test_rrl_slip(slip: int, expected: list[str]) -> None:
    rrl = ResponseRateLimiter(RrlPolicy(rate=1.0, burst=1, slip=slip))
    assert rrl.check("k", now=0.0) == "send"
    assert [rrl.check("k", now=0.0) for _ in range(4)] == expected


def test_rrl_table_is_bounded_and_evicts_the_least_recent() -> None:
    rrl = ResponseRateLimiter(RrlPolicy(rate=1.0, burst=1, slip=0, max_keys=3))
    for key in ("a", "b", "c"):
        assert rrl.check(key, now=0.0) == "send"
    assert rrl.check("a", now=0.0) == "drop"  # a is now the most recent
    assert rrl.check("d", now=0.0) == "send"  # evicts b
    assert len(rrl) == 3
    assert rrl.check("a", now=0.0) == "drop" and rrl.check("c", now=0.0) == "drop"
    assert rrl.check("b", now=0.0) == "send"  # forgotten: a fresh bucket


def test_rrl_policy_is_validated() -> None:
    with pytest.raises(ValueError):
        RrlPolicy(rate=0.0)
    with pytest.raises(ValueError):
        RrlPolicy(burst=0)
    with pytest.raises(ValueError):
        RrlPolicy(slip=-1)
    with pytest.raises(ValueError):
        RrlPolicy(max_keys=0)


LOCAL = (ip_network("127.0.0.0/8"), ip_network("::1/128"), ip_network("192.0.2.2/32"),
         ip_network("fd00::2/128"))


@pytest.mark.parametrize(
    ("upstream", "listen", "expected"),
    [
        (("127.0.0.1", 53), ("127.0.0.1", 53), True),  # the same address
        (("127.0.0.1", 53), ("0.0.0.0", 53), True),  # wildcard: every local address reaches us
        (("127.0.0.2", 53), ("0.0.0.0", 53), True),  # all of 127/8 is local
        (("192.0.2.2", 53), ("0.0.0.0", 53), True),  # the host's other address
        (("192.0.2.2", 53), ("", 53), True),
        (("::1", 53), ("::", 53), True),
        (("fd00::2", 53), ("::", 53), True),
        (("127.0.0.1", 53), ("::", 53), True),  # "::" is dual-stack for UDP on Linux
        (("::ffff:127.0.0.1", 53), ("127.0.0.1", 53), True),  # an IPv4-mapped spelling
        (("0.0.0.0", 53), ("127.0.0.1", 53), True),  # sending to 0.0.0.0 reaches 127.0.0.1
        (("::", 53), ("::1", 53), True),
        (("0:0::1", 53), ("::1", 53), True),
        (("fe80::1%eth0", 53), ("fe80::1", 53), True),
        (("127.0.0.1", 5353), ("127.0.0.1", 53), False),  # another port: another server
        (("127.0.0.53", 53), ("127.0.0.1", 53), False),  # systemd-resolved while we listen on 127.0.0.1
        (("127.0.0.1", 53), ("192.0.2.2", 53), False),  # we listen on one address only
        (("192.0.2.1", 53), ("0.0.0.0", 53), False),  # not ours
        (("8.8.8.8", 53), ("0.0.0.0", 53), False),
        (("::1", 53), ("0.0.0.0", 53), False),  # an IPv4 socket does not get IPv6 traffic
        (("2001:db8::1", 53), ("::", 53), False),
        (("resolver.example", 53), ("0.0.0.0", 53), False),  # not an address: kept
    ],
)
def test_reaches_self(upstream: tuple[str, int], listen: tuple[str, int], expected: bool) -> None:
    assert reaches_self(upstream, listen=listen, local=LOCAL) is expected


FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 4
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 4
           |-- 192.0.2.2
              /32 host LOCAL
"""

IF_INET6 = """00000000000000000000000000000001 01 80 10 80       lo
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
fd000000000000000000000000000002 04 40 00 82     eth0
garbage line
"""


def test_local_networks_from_proc() -> None:
    nets = local_networks(fib_trie=FIB_TRIE, if_inet6=IF_INET6)
    assert set(nets) == {
        ip_network("127.0.0.0/8"), ip_network("127.0.0.1/32"), ip_network("192.0.2.2/32"),
        ip_network("::1/128"), ip_network("fe80::fc:ff:fe00:1/128"), ip_network("fd00::2/128"),
    }
    assert set(local_networks(fib_trie="", if_inet6="")) == set(LOOPBACK)  # loopback is always local


def test_replies_are_bytes_whatever_the_buffer() -> None:
    query = bytearray(header() + QUESTION)
    assert type(error_reply(query, FORMERR, ra=True)) is bytes
    assert type(truncated_reply(query, qend=QEND, rcode=0, ra=True, edns=True)) is bytes
