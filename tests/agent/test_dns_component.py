"""The agent's DNS component: what it allows and the rate budget its processes share."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from daprdockr.adapters.sockets import host_networks
from daprdockr.agent.components import Dns
from daprdockr.core.dns.guard import LOOPBACK
from daprdockr.core.state import ClusterState


async def containers() -> list[str]:
    return ["172.31.0.0/16"]


def dns(workers: int, allow: list[str]) -> Dns:
    return Dns(listen=("127.0.0.1", 0), upstreams=[], ttl=5, workers=workers,
               allow=[ip_network(a) for a in allow], container_networks=containers, state=ClusterState)


async def test_dns_allow_adds_to_loopback_the_hosts_addresses_and_the_container_networks() -> None:
    allowed = await dns(0, ["192.0.2.0/24"])._allowed()
    assert set(allowed) >= {*LOOPBACK, *host_networks(), ip_network("172.31.0.0/16"), ip_network("192.0.2.0/24")}
    assert set(await dns(0, [])._allowed()) == set(allowed) - {ip_network("192.0.2.0/24")}


@pytest.mark.parametrize("workers", [0, 1, 2, 3])
def test_the_processes_on_the_address_share_one_rate_budget(workers: int) -> None:
    rrl = dns(workers, []).limits(LOOPBACK).rrl
    assert rrl is not None
    assert rrl.rate * (workers + 1) == pytest.approx(100.0)
    assert rrl.burst * (workers + 1) <= 200
