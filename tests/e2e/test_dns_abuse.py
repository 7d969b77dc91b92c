"""DNS under abuse, from clients that are neither loopback nor the host's: network namespaces.

The lab (:mod:`tests.support.netns`): a server namespace running a real etcd, a hollow agent
(``--runtime hollow``: real lease, claims and DNS; no Docker) whose DNS listens on
198.51.100.1:5300, and ``daprdockr dns`` on 198.51.100.1:53, both with ``--dns-allow
192.0.2.0/24``; an *outside* client (198.51.100.2) and an *allowed* one (192.0.2.2) in namespaces
of their own.  A service of 20 instances with a published port makes large answers (its SRV
answer is ~1.2 KB at EDNS 1232).

* An outside client's UDP answers (SRV, A, ANY, SOA, NXDOMAIN; with and without EDNS) are never
  above 3x its query nor 512 bytes, from both servers; the same names over TCP are answered in
  full, and the allowed client gets the full answer over UDP.
* ``--dns-allow`` means the same in the agent and in ``dns`` mode: the allowed client may recurse
  (its forward fails upstream: SERVFAIL, not REFUSED), the outside client is REFUSED, in both.
* Negative answers carry a TTL of at most 1 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.support.netns import REPO, SERVER, Lab, served_lab, why_not

pytestmark = [pytest.mark.slow]

INSTANCES = 20
AGENT_DNS, MODE_DNS = 5300, 53
PY = sys.executable


def probe(lab: Lab, ns: str, *, port: int, name: str, qtype: str = "A", edns: int = 0,
          tcp: bool = False) -> dict[str, object]:
    argv = [PY, "-m", "tests.support.dns_probe", "--server", SERVER, "--port", str(port), "--name", name,
            "--type", qtype, "--edns", str(edns)] + (["--tcp"] if tcp else [])
    r = subprocess.run(lab.argv(ns, argv), capture_output=True, text=True, timeout=30, cwd=REPO)
    assert r.returncode == 0, r.stderr
    out: dict[str, object] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = why_not()
    if reason:
        pytest.skip(f"the DNS abuse tests need network namespaces: {reason}")
    tmp = tmp_path_factory.mktemp("dnslab")
    with served_lab(tmp, instances=INSTANCES, agent_dns=f"{SERVER}:{AGENT_DNS}", mode_dns=f"{SERVER}:{MODE_DNS}",
                    extra=["--dns-workers", "0"]) as lab:
        deadline = time.monotonic() + 60
        for port in (AGENT_DNS, MODE_DNS):
            while probe(lab, lab.inside, port=port, name="web.lab.container", qtype="SRV",
                        edns=4096).get("answers") != INSTANCES:
                assert time.monotonic() < deadline, (tmp / "agent.log").read_text()[-3000:]
                time.sleep(0.5)
        yield lab


QUERIES = [("web.lab.container", "SRV"), ("web.lab.container", "A"), ("_8080._tcp.web.lab.container", "SRV"),
           ("1.web.lab.container", "SRV"), ("web.lab.container", "ANY"), ("container", "SOA"),
           ("nope.lab.container", "A")]


@pytest.mark.parametrize("port", [AGENT_DNS, MODE_DNS], ids=["agent", "dns-mode"])
@pytest.mark.parametrize("edns", [0, 1232, 4096])
def test_an_outside_clients_udp_answers_stay_within_the_bound(lab: Lab, port: int, edns: int) -> None:
    for name, qtype in QUERIES:
        got = probe(lab, lab.out, port=port, name=name, qtype=qtype, edns=edns)
        query, reply = int(str(got["query"])), int(str(got["reply"]))
        assert reply, f"{name} {qtype}: no answer"
        assert reply <= min(3 * query, 512), f"{name} {qtype} EDNS {edns}: {reply} bytes for a {query}-byte query"


@pytest.mark.parametrize("port", [AGENT_DNS, MODE_DNS], ids=["agent", "dns-mode"])
def test_tcp_and_allowed_clients_get_the_full_answer(lab: Lab, port: int) -> None:
    outside_udp = probe(lab, lab.out, port=port, name="web.lab.container", qtype="SRV", edns=1232)
    assert outside_udp["tc"] is True and outside_udp["answers"] == 0
    outside_tcp = probe(lab, lab.out, port=port, name="web.lab.container", qtype="SRV", tcp=True)
    assert outside_tcp["answers"] == INSTANCES and outside_tcp["tc"] is False
    allowed_udp = probe(lab, lab.inside, port=port, name="web.lab.container", qtype="SRV", edns=4096)
    assert allowed_udp["answers"] == INSTANCES and allowed_udp["tc"] is False
    assert int(str(allowed_udp["reply"])) > 3 * int(str(allowed_udp["query"]))  # (the full answer is large)


@pytest.mark.parametrize("port", [AGENT_DNS, MODE_DNS], ids=["agent", "dns-mode"])
def test_dns_allow_means_the_same_in_the_agent_and_in_dns_mode(lab: Lab, port: int) -> None:
    assert probe(lab, lab.inside, port=port, name="example.org")["rcode"] == "SERVFAIL"  # may recurse
    assert probe(lab, lab.out, port=port, name="example.org")["rcode"] == "REFUSED"
    assert probe(lab, lab.srv, port=port, name="example.org")["rcode"] == "SERVFAIL"  # (the host's own address)


@pytest.mark.parametrize("port", [AGENT_DNS, MODE_DNS], ids=["agent", "dns-mode"])
def test_negative_answers_are_cached_for_a_second_at_most(lab: Lab, port: int) -> None:
    for name, rcode in (("nope.lab.container", "NXDOMAIN"), (f"{INSTANCES + 1}.web.lab.container", "NXDOMAIN"),
                        ("1.web.lab.container", "NOERROR")):
        got = probe(lab, lab.inside, port=port, name=name, qtype="AAAA")  # (no AAAA: NODATA for 1.web)
        assert got["rcode"] == rcode and got["answers"] == 0 and got["neg_ttl"] == 1, got
