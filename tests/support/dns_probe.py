"""One DNS query over UDP or TCP, its sizes on the wire and what came back, as a JSON line.

Run inside a namespace of the DNS lab (:mod:`tests.support.netns`) by tests and the abuse
benchmark: ``python -m tests.support.dns_probe --server IP --port N --name NAME [--type SRV]
[--edns 1232] [--tcp]``.  Prints ``{"query": bytes, "reply": bytes, "tc": bool, "rcode": name,
"answers": n, "neg_ttl": soa ttl or null}``; no reply within the timeout prints ``"reply": 0``.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype


def ask(*, server: str, port: int, name: str, qtype: str, edns: int, tcp: bool, timeout: float) -> dict[str, object]:
    q = dns.message.make_query(name, qtype, use_edns=edns > 0, payload=edns or 512)
    wire = q.to_wire()
    try:
        if tcp:
            with socket.create_connection((server, port), timeout=timeout) as s:
                s.sendall(struct.pack("!H", len(wire)) + wire)
                head = s.recv(2, socket.MSG_WAITALL)
                size = struct.unpack("!H", head)[0]
                data = b""
                while len(data) < size:
                    chunk = s.recv(size - len(data))
                    if not chunk:
                        break
                    data += chunk
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(timeout)
                s.sendto(wire, (server, port))
                data, _ = s.recvfrom(65535)
    except OSError:
        return {"query": len(wire), "reply": 0}
    msg = dns.message.from_wire(data, ignore_trailing=True, raise_on_truncation=False)
    soa = [rrset.ttl for rrset in msg.authority if rrset.rdtype == dns.rdatatype.SOA]
    return {"query": len(wire), "reply": len(data), "tc": bool(msg.flags & dns.flags.TC),
            "rcode": dns.rcode.to_text(msg.rcode()), "answers": sum(len(r) for r in msg.answer),
            "neg_ttl": soa[0] if soa else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--name", action="append", required=True)
    ap.add_argument("--type", default="A")
    ap.add_argument("--edns", type=int, default=0)
    ap.add_argument("--tcp", action="store_true")
    ap.add_argument("--timeout", type=float, default=2.0)
    args = ap.parse_args()
    for name in args.name:
        print(json.dumps(ask(server=args.server, port=args.port, name=name, qtype=args.type, edns=args.edns,
                             tcp=args.tcp, timeout=args.timeout)), flush=True)


if __name__ == "__main__":
    main()
