"""Building the agent's configuration from command-line values (``daprdockr agent``, ``daprdockrd``)."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

from daprdockr.adapters.statedir import default_state_dir
from daprdockr.agent.config import AgentConfig
from daprdockr.core.dnsguard import Network
from daprdockr.core.endpoints import EtcdSecurity, parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.names import validate_label, validate_unicast_ip
from daprdockr.errors import ValidationError


def parse_addr(text: str, *, field: str, default_port: int) -> tuple[str, int] | None:
    if text.lower() in ("off", "none", ""):
        return None
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    if not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValidationError(f"{text!r} is not ADDR:PORT or off", field=field)
    return (host, int(port))


def parse_networks(text: str, *, field: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8,192.168.1.0/24"`` -> networks (empty text: none)."""
    result = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            result.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValidationError(f"{item!r} is not a network (CIDR)", field=field) from None
    return tuple(result)


def default_node_id() -> str:
    """The hostname, reduced to a DNS label."""
    raw = socket.gethostname().split(".")[0].lower()
    label = "".join(c if c.isalnum() or c == "-" else "-" for c in raw).strip("-")[:63] or "node"
    return label


def auto_dns_workers() -> int:
    """Extra DNS processes by default: one per spare core, at most two."""
    return max(0, min(2, (os.cpu_count() or 1) - 1))


def build_agent_config(
    *, etcd: str, prefix: str, node_id: str | None, advertise_ip: str, ttl: int, capacity: int,
    docker: str | None, state_dir: Path | None, dns_listen: str, dns_upstream: list[str] | None, dns_ttl: int,
    http_listen: str, nginx: str, api_listen: str, keep_on_exit: bool, dns_workers: int = -1,
    api_token_file: Path | None = None, security: EtcdSecurity | None = None, dns_allow: str = "",
    drain_on_shutdown: bool = False, drain_deadline: float = 120.0,
) -> AgentConfig:
    """A validated :class:`AgentConfig`; ValidationError names the flag of a bad value."""
    if ttl < 1:
        raise ValidationError("must be >= 1 second", field="--ttl")
    if not 0 < drain_deadline <= 86_400:
        raise ValidationError("must be 0 < seconds <= 86400", field="--drain-deadline")
    if not -1 <= dns_workers <= 16:
        raise ValidationError("must be -1 (auto) or 0..16", field="--dns-workers")
    upstreams = tuple(a for a in (parse_addr(u, field="--dns-upstream", default_port=53) for u in dns_upstream or ())
                      if a is not None)
    return AgentConfig(
        node_id=validate_label(node_id or default_node_id(), field="--node-id"),
        advertise_ip=validate_unicast_ip(advertise_ip, field="--advertise-ip"),
        etcd=parse_endpoints(etcd),
        etcd_security=security,
        prefix=KeySchema(prefix).prefix,
        docker=docker,
        ttl=ttl,
        capacity=capacity,
        state_dir=state_dir or default_state_dir(),
        dns_listen=parse_addr(dns_listen, field="--dns-listen", default_port=53),
        dns_upstreams=upstreams,
        dns_ttl=dns_ttl,
        dns_workers=auto_dns_workers() if dns_workers < 0 else dns_workers,
        dns_allow=parse_networks(dns_allow, field="--dns-allow"),
        http_listen=parse_addr(http_listen, field="--http-listen", default_port=80),
        nginx_binary=nginx,
        api_listen=parse_addr(api_listen, field="--api-listen", default_port=7400),
        api_token_file=api_token_file,
        release_on_exit=not keep_on_exit,
        drain_on_shutdown=drain_on_shutdown,
        drain_deadline=drain_deadline,
    )

