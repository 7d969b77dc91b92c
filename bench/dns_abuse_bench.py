"""DNS under abuse: does a flood from an outside client cost allowed clients their answers, and
what does an outside client get back for what it sends?

In the DNS lab of network namespaces (:mod:`tests.support.netns`; RFC 5737 addresses that exist
only inside them): a hollow agent (real etcd, lease, claims and DNS; the agent's default DNS
workers) advertising 198.51.100.1 with ``--dns-listen auto`` (port 53 there, plus 127.0.0.1:53
in its namespace), ``--dns-allow 192.0.2.0/24``, and a service of 30 instances.  Clients, each
dnsperf for ``--seconds``:

* *allowed*: 192.0.2.2 at 1 000 queries/s (instance A names and the service's SRV);
* *loopback*: 127.0.0.1 in the server's namespace at 1 000 queries/s (the same queries);
* *flood*: the outside client 198.51.100.2 at 20 000 queries/s, then unthrottled (the most this
  machine's client sends), with the same queries plus SRV at EDNS 1232 (the largest answers).

Baseline in the same run: the allowed and loopback clients without the flood.  Figures: each
client's answered share (target >= 99.9 %); the outside client's answered bytes / sent bytes
(DNS payload: the counters of its interface less 42 bytes of Ethernet, IPv4 and UDP headers per
packet), under the flood and alone at the rate limit (100 queries/s of the largest answer:
before the bound, 25x); the server namespace's ``UdpRcvbufErrors``.  The bound: an outside
client's UDP answer is at most 3x its query and 512 bytes, so bytes out / bytes in <= 3.

    sudo .venv/bin/python bench/dns_abuse_bench.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import benchlib  # noqa: F401  (puts the repository on sys.path)
from tests.support.netns import SERVER, Lab, served_lab, why_not

INSTANCES = 30
HEADERS = 14 + 20 + 8  # Ethernet, IPv4, UDP: per packet, not DNS


@dataclass(frozen=True)
class Perf:
    sent: int
    completed: int
    qps: float

    @property
    def share(self) -> float:
        return self.completed / self.sent if self.sent else 0.0


def query_file(path: Path, *, big: bool) -> Path:
    lines = [f"{n}.web.lab.container A" for n in range(1, INSTANCES + 1)] + ["web.lab.container SRV"]
    if big:
        lines += ["_8080._tcp.web.lab.container SRV"] * 10
    path.write_text("\n".join(lines) + "\n")
    return path


def dnsperf(lab: Lab, ns: str, *, server: str, data: Path, seconds: float, qps: int | None,
            edns: bool = False, clients: int = 1, outstanding: int = 500) -> subprocess.Popen[str]:
    """dnsperf in ``ns``; a flood keeps up to ``outstanding`` queries unanswered (the rate limit
    drops most of its answers: with a small window it would wait on timeouts, not send)."""
    argv = ["dnsperf", "-s", server, "-p", "53", "-d", str(data), "-l", str(seconds), "-c", str(clients),
            "-t", "1", "-q", str(outstanding)] + (["-Q", str(qps)] if qps else [])
    if edns:
        argv += ["-e"]
    return subprocess.Popen(lab.argv(ns, argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def parse(out: str) -> Perf:
    sent = re.search(r"Queries sent:\s+(\d+)", out)
    done = re.search(r"Queries completed:\s+(\d+)", out)
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    if not (sent and done and qps):
        raise RuntimeError(f"dnsperf said:\n{out}")
    return Perf(sent=int(sent[1]), completed=int(done[1]), qps=float(qps[1]))


def dev_counters(lab: Lab, ns: str) -> tuple[int, int, int, int]:
    """(rx bytes, rx packets, tx bytes, tx packets) of the namespace's veth ``v``."""
    text = lab.run(ns, ["cat", "/proc/net/dev"]).stdout
    for line in text.splitlines():
        if line.strip().startswith("v:"):
            f = line.split(":", 1)[1].split()
            return int(f[0]), int(f[1]), int(f[8]), int(f[9])
    raise RuntimeError(f"no interface v in {ns}:\n{text}")


def rcvbuf_errors(lab: Lab) -> int:
    text = lab.run(lab.srv, ["cat", "/proc/net/snmp"]).stdout
    rows = [line.split() for line in text.splitlines() if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def round_(lab: Lab, tmp: Path, *, seconds: float, flood: int | None, flood_on: bool) -> tuple[Perf, Perf, Perf | None,
                                                                                                 float, int]:
    """One round: allowed and loopback at 1 000/s, and the flood if ``flood_on`` (rate ``flood``,
    None: unthrottled).  Returns their results, the outside bytes ratio and new rcvbuf errors."""
    small = query_file(tmp / "q.txt", big=False)
    big = query_file(tmp / "big.txt", big=True)
    errors0 = rcvbuf_errors(lab)
    before = dev_counters(lab, lab.out)
    procs = {}
    if flood_on:
        procs["flood"] = dnsperf(lab, lab.out, server=SERVER, data=big, seconds=seconds, qps=flood, edns=True,
                                 clients=8, outstanding=60000)
    time.sleep(0.3 if flood_on else 0)
    procs["allowed"] = dnsperf(lab, lab.inside, server=SERVER, data=small, seconds=seconds, qps=1000)
    procs["loopback"] = dnsperf(lab, lab.srv, server="127.0.0.1", data=small, seconds=seconds, qps=1000)
    outs = {name: p.communicate(timeout=seconds + 60)[0] for name, p in procs.items()}
    after = dev_counters(lab, lab.out)
    ratio = outside_ratio(before, after)
    return (parse(outs["allowed"]), parse(outs["loopback"]), parse(outs["flood"]) if flood_on else None, ratio,
            rcvbuf_errors(lab) - errors0)


def outside_ratio(before: tuple[int, int, int, int], after: tuple[int, int, int, int]) -> float:
    rx = (after[0] - before[0]) - HEADERS * (after[1] - before[1])
    tx = (after[2] - before[2]) - HEADERS * (after[3] - before[3])
    return rx / tx if tx > 0 else 0.0


def at_the_limit(lab: Lab, tmp: Path, *, seconds: float) -> tuple[Perf, float]:
    """The outside client alone, 100 queries/s of the largest answer (SRV of 30 instances, EDNS 1232)."""
    data = tmp / "srv.txt"
    data.write_text("web.lab.container SRV\n")
    before = dev_counters(lab, lab.out)
    p = dnsperf(lab, lab.out, server=SERVER, data=data, seconds=seconds, qps=100, edns=True)
    out = p.communicate(timeout=seconds + 60)[0]
    return parse(out), outside_ratio(before, dev_counters(lab, lab.out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    reason = why_not()
    if reason:
        sys.exit(f"dns_abuse_bench needs network namespaces: {reason}")
    print(f"# dns_abuse_bench {datetime.now().isoformat(timespec='seconds')}: hollow agent, {INSTANCES} instances, "
          f"{args.seconds:g} s per round; allowed and loopback clients at 1 000 q/s")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with served_lab(tmp, instances=INSTANCES, agent_dns="auto") as lab:
            deadline = time.monotonic() + 60
            while True:
                r = lab.run(lab.inside, ["dig", "+short", f"@{SERVER}", "web.lab.container", "SRV"])
                if len(r.stdout.split("\n")) > INSTANCES:
                    break
                if time.monotonic() > deadline:
                    sys.exit("the service did not come up:\n" + (tmp / "agent.log").read_text()[-3000:])
                time.sleep(0.5)
            print(f"{'round':<22} {'allowed answered':>17} {'loopback answered':>18} {'flood sent q/s':>15} "
                  f"{'outside bytes out/in':>21} {'RcvbufErrors':>13}")
            for label, flood, on in (("baseline (no flood)", None, False), ("flood 20k q/s", 20000, True),
                                     ("flood unthrottled", None, True)):
                allowed, loop, fl, ratio, errs = round_(lab, tmp, seconds=args.seconds, flood=flood, flood_on=on)
                sent = f"{fl.sent / args.seconds:,.0f}" if fl else "-"
                shown = f"{ratio:.2f}x" if fl else "-"
                print(f"{label:<22} {allowed.share:>16.3%} {loop.share:>17.3%} {sent:>15} {shown:>21} {errs:>13}")
            perf, ratio = at_the_limit(lab, tmp, seconds=args.seconds)
            print(f"outside client alone at 100 q/s of the largest answer (SRV, EDNS 1232): answered "
                  f"{perf.share:.1%}, bytes out/in {ratio:.2f}x (bound: 3x)")
    print("targets: allowed and loopback answered >= 99.9 % under either flood; outside bytes out/in <= 3x")


if __name__ == "__main__":
    main()
