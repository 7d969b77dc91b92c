"""The outside clients' answer bound, the one meaning of --dns-allow, and the shared rate budget."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from daprdockr.core.dns.guard import LOOPBACK, OUTSIDE_MAX, RrlPolicy, allowed_networks, outside_limit


@pytest.mark.parametrize(("query", "limit"), [(17, 51), (37, 111), (48, 144), (170, 510), (171, 512), (600, 512)])
def test_outside_limit_is_three_times_the_query_and_512_at_most(query: int, limit: int) -> None:
    assert outside_limit(query) == limit <= OUTSIDE_MAX


def test_dns_allow_adds_to_what_is_always_allowed() -> None:
    host, containers, given = [ip_network("10.1.2.3/32")], [ip_network("172.17.0.0/16")], [ip_network("192.0.2.0/24")]
    assert allowed_networks(given, host=host, containers=containers) == (*LOOPBACK, *host, *containers, *given)
    assert allowed_networks((), host=host) == (*LOOPBACK, *host)
    assert allowed_networks([*given, *given, LOOPBACK[0]], host=()) == (*LOOPBACK, *given)  # (deduplicated)


@pytest.mark.parametrize(("processes", "rate", "burst"), [(1, 100.0, 200), (2, 50.0, 100), (3, 100 / 3, 66)])
def test_processes_on_one_address_share_one_budget(processes: int, rate: float, burst: int) -> None:
    part = RrlPolicy().shared_by(processes)
    assert (part.rate, part.burst, part.slip) == (pytest.approx(rate), burst, 2)
    assert part.rate * processes == pytest.approx(100.0)
