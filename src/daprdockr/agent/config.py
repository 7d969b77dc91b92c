"""Agent configuration: one frozen record built by the CLI (``daprdockr agent``/``daprdockrd``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from daprdockr.adapters.hollow_runtime import HollowOptions
from daprdockr.adapters.statedir import default_state_dir
from daprdockr.core.dns.guard import Network
from daprdockr.core.endpoints import DEFAULT_ETCD, Endpoint, EtcdSecurity, parse_endpoints
from daprdockr.core.etcd_health import DEFAULT_COMPACT_INTERVAL, DEFAULT_QUOTA_BYTES
from daprdockr.core.keys import DEFAULT_PREFIX
from daprdockr.core.nginx_render import MODULE_DIRS

RuntimeKind = Literal["docker", "hollow"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AcmeSettings:
    """``--acme-*``: the CA this agent orders certificates from (see agent/acme_manager.py)."""

    directory: str  # the ACME directory URL
    email: str = ""  # the account's contact
    ca_file: str | None = None  # the CA trusted for the directory's HTTPS (None: the system's roots)
    interval: float = 10.0  # seconds between two looks at what needs a certificate
    retry_base: float = 60.0  # the wait after a host's first failed order (doubling, capped at 6 h)
    challenge_wait: float = 1.0  # from publishing a challenge in etcd to telling the CA (every nginx gets it)
    order_timeout: float = 90.0  # the most an order waits for the CA's validation and issuance


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """Everything an agent runs with; see ``daprdockr agent --help`` for the meaning of each."""

    node_id: str
    advertise_ip: str = "127.0.0.1"
    etcd: tuple[Endpoint, ...] = field(default_factory=lambda: parse_endpoints(DEFAULT_ETCD))
    etcd_security: EtcdSecurity | None = None  # TLS files and etcd user for https:// / auth
    prefix: str = DEFAULT_PREFIX
    docker: str | None = None  # Docker engine URL (unix:///var/run/docker.sock when None)
    runtime: RuntimeKind = "docker"  # hollow: containers kept in memory, no Docker (a test node)
    hollow: HollowOptions = field(default_factory=HollowOptions)  # how a hollow node's containers behave
    ttl: int = 5  # lease TTL in seconds; keepalive every ttl/3
    capacity: int = 0  # max instances on this node, 0 = unlimited
    state_dir: Path = field(default_factory=default_state_dir)  # private: 0700, checked at start
    # DNS server (issue 4); None disables it
    dns_listen: tuple[str, int] | None = ("127.0.0.1", 53)
    dns_also: tuple[tuple[str, int], ...] = ()  # more addresses answered (loopback beside the advertise address)
    dns_upstreams: tuple[tuple[str, int], ...] = ()  # empty = from /etc/resolv.conf
    dns_ttl: int = 5
    dns_workers: int = 0  # extra DNS processes sharing the address (SO_REUSEPORT)
    # clients (besides loopback) answered for names outside .container; empty: the networks of
    # this node's containers, asked from Docker at start
    dns_allow: tuple[Network, ...] = ()
    # nginx (issue 5); None disables it
    http_listen: tuple[str, int] | None = ("0.0.0.0", 80)
    https_listen: tuple[str, int] | None = None  # nginx's HTTPS server (issue 29); None: none
    https_auto: bool = False  # --https-listen auto: <advertise ip>:443 if etcd holds a certificate at start
    allow_insecure_keys: bool = False  # serve stored private keys from an etcd with neither TLS nor auth
    nginx_binary: str = "nginx"
    nginx_modules: tuple[str, ...] = MODULE_DIRS  # where nginx's Lua module is looked for
    nginx_orphan_timeout: float = 60.0  # a left-running nginx nobody adopts quits this long after the last heartbeat
    # agent HTTP API (issue 7); None disables it
    api_listen: tuple[str, int] | None = ("127.0.0.1", 7400)
    api_token_file: Path | None = None  # None: <state_dir>/api-token, generated on first start
    max_log_streams: int = 16
    # the Docker client configuration whose registry logins pulls use (None: pull without credentials)
    docker_config: Path | None = None
    # host paths containers may bind-mount (resolved; nothing by default)
    allow_bind: tuple[str, ...] = ()
    # shutdown: release instances and stop containers (True) or leave them for a restart
    release_on_exit: bool = True
    shutdown_timeout: float = 20.0
    stop_timeout: float = 5.0  # docker stop grace period per container
    confirm_timeout: float = 2.0  # how long a removal waits for every agent to apply it
    drain_timeout: float = 5.0  # then how long for open connections to a removed instance to close
    # on SIGTERM, first drain the node (its instances start elsewhere and get healthy, then stop here)
    drain_on_shutdown: bool = False
    drain_deadline: float = 120.0  # the most a drain on shutdown waits before shutting down anyway
    rebalance: bool = True  # move instances to even out each service across the nodes (core/planning/rebalance.py)
    # etcd housekeeping (agent/etcd_housekeeping.py): compaction by the lock holder (0: never), and
    # the quota the database size is shown against (etcd's API does not tell it)
    compact_interval: float = DEFAULT_COMPACT_INTERVAL
    etcd_quota_bytes: int = DEFAULT_QUOTA_BYTES
    acme: AcmeSettings | None = None  # order certificates for HTTPS hosts (None: never)

    @property
    def container_dns(self) -> str | None:
        """The DNS server containers are given: the agent's DNS address when it is on port 53
        (resolv.conf has no port), the advertise address when DNS listens on every address."""
        if self.dns_listen is None or self.dns_listen[1] != 53:
            return None
        host = self.dns_listen[0]
        return self.advertise_ip if host in ("0.0.0.0", "::") else host
