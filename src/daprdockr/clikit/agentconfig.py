"""Building the agent's configuration from command-line values (``daprdockr agent``, ``daprdockrd``)."""

from __future__ import annotations

import ipaddress
import os
import socket
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from daprdockr.adapters.hollow_runtime import HollowOptions
from daprdockr.adapters.hostip import DEFAULT_ROUTE_FILE, detect_host_ip
from daprdockr.adapters.registry_credentials import default_docker_config
from daprdockr.adapters.statedir import default_state_dir
from daprdockr.agent.config import AcmeSettings, AgentConfig, RuntimeKind
from daprdockr.clikit.etcdopts import etcd_security
from daprdockr.core.dns.guard import Network
from daprdockr.core.endpoints import EtcdSecurity, parse_endpoints
from daprdockr.core.etcd_health import DEFAULT_QUOTA_BYTES, parse_bytes, parse_interval
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


def _runtime_kind(runtime: str) -> RuntimeKind:
    if runtime == "docker":
        return "docker"
    if runtime == "hollow":
        return "hollow"
    raise ValidationError(f"{runtime!r} is not docker or hollow", field="--runtime")


def hollow_options(*, start_delay: float, failure_rate: float, seed: int | None) -> HollowOptions:
    """The ``--hollow-*`` values, validated."""
    if not 0 <= start_delay <= 3600:
        raise ValidationError("must be 0 <= seconds <= 3600", field="--hollow-start-delay")
    if not 0 <= failure_rate <= 1:
        raise ValidationError("must be a fraction 0..1", field="--hollow-failure-rate")
    return HollowOptions(start_delay=start_delay, failure_rate=failure_rate, seed=seed)


def _docker_config(text: str) -> Path | None:
    if text.lower() in ("none", "off"):
        return None
    if "\x00" in text:
        raise ValidationError("is not a path", field="--docker-config")
    return Path(text).expanduser().absolute() if text else default_docker_config()


def build_agent_config(
    *, etcd: str, prefix: str, node_id: str | None, advertise_ip: str, ttl: int, capacity: int,
    docker: str | None, state_dir: Path | None, dns_listen: str, dns_upstream: list[str] | None, dns_ttl: int,
    http_listen: str, nginx: str, api_listen: str, keep_on_exit: bool, dns_workers: int = -1,
    api_token_file: Path | None = None, security: EtcdSecurity | None = None, dns_allow: str = "",
    drain_on_shutdown: bool = False, drain_deadline: float = 120.0, allow_bind: Sequence[str] = (),
    route_file: Path = DEFAULT_ROUTE_FILE, nginx_orphan_timeout: float = 60.0, rebalance: str = "on",
    runtime: str = "docker", hollow_start_delay: float = 0.0, hollow_failure_rate: float = 0.0,
    hollow_seed: int | None = None, docker_config: str = "", compact_interval: str = "300",
    etcd_quota_bytes: str = str(DEFAULT_QUOTA_BYTES), https_listen: str = "auto", allow_insecure_keys: bool = False,
    acme_directory: str = "", acme_email: str = "", acme_ca_file: str = "", acme_interval: float = 10.0,
) -> AgentConfig:
    """A validated :class:`AgentConfig`; ValidationError names the flag of a bad value.

    ``advertise_ip`` ``auto`` (or empty) is detected from ``route_file`` (the address of the
    interface whose subnet holds the default gateway, as the original DaprDockr did).
    ``dns_listen`` ``auto`` is port 53 on the advertise address, plus 127.0.0.1:53 when the
    advertise address is not a loopback one.  ``docker_config`` empty is the running user's
    Docker configuration (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``),
    ``none`` pulls without credentials.
    """
    if ttl < 1:
        raise ValidationError("must be >= 1 second", field="--ttl")
    if not 0 < drain_deadline <= 86_400:
        raise ValidationError("must be 0 < seconds <= 86400", field="--drain-deadline")
    if rebalance not in ("on", "off"):
        raise ValidationError(f"{rebalance!r} is not on or off", field="--rebalance")
    if not 0 < nginx_orphan_timeout <= 86_400:
        raise ValidationError("must be 0 < seconds <= 86400", field="--nginx-orphan-timeout")
    if not -1 <= dns_workers <= 16:
        raise ValidationError("must be -1 (auto) or 0..16", field="--dns-workers")
    kind = _runtime_kind(runtime)
    hollow = hollow_options(start_delay=hollow_start_delay, failure_rate=hollow_failure_rate, seed=hollow_seed)
    upstreams = tuple(a for a in (parse_addr(u, field="--dns-upstream", default_port=53) for u in dns_upstream or ())
                      if a is not None)
    if advertise_ip in ("", "auto"):
        try:
            advertise_ip = detect_host_ip(route_file)
        except ValidationError as exc:
            raise ValidationError(f"{exc}; give the address", field="--advertise-ip") from None
    advertise_ip = validate_unicast_ip(advertise_ip, field="--advertise-ip")
    dns_also: tuple[tuple[str, int], ...] = ()
    if dns_listen == "auto":
        dns_listen = f"{advertise_ip}:53"
        if not ipaddress.ip_address(advertise_ip).is_loopback:
            dns_also = (("127.0.0.1", 53),)
    http_addr = parse_addr(http_listen, field="--http-listen", default_port=80)
    https_auto = https_listen == "auto"  # (port 443 of the advertise address if etcd holds a certificate at start)
    https_addr = None if https_auto else parse_addr(https_listen, field="--https-listen", default_port=443)
    if https_addr is not None and (http_addr is None or https_addr == http_addr):
        raise ValidationError("needs --http-listen, on another address or port", field="--https-listen")
    binds = []
    for path in allow_bind:
        if not path.startswith("/") or "\x00" in path or ".." in path.split("/"):
            raise ValidationError(f"{path!r} is not an absolute path", field="--allow-bind")
        binds.append(path)
    return AgentConfig(
        node_id=validate_label(node_id or default_node_id(), field="--node-id"),
        advertise_ip=advertise_ip,
        etcd=parse_endpoints(etcd),
        etcd_security=security,
        prefix=KeySchema(prefix).prefix,
        docker=docker,
        runtime=kind,
        hollow=hollow,
        ttl=ttl,
        capacity=capacity,
        state_dir=state_dir or default_state_dir(),
        dns_listen=parse_addr(dns_listen, field="--dns-listen", default_port=53),
        dns_also=dns_also,
        allow_bind=tuple(binds),
        docker_config=_docker_config(docker_config),
        dns_upstreams=upstreams,
        dns_ttl=dns_ttl,
        dns_workers=auto_dns_workers() if dns_workers < 0 else dns_workers,
        dns_allow=parse_networks(dns_allow, field="--dns-allow"),
        http_listen=http_addr,
        https_listen=https_addr,
        https_auto=https_auto and http_addr is not None and http_addr != (advertise_ip, 443),
        allow_insecure_keys=allow_insecure_keys,
        nginx_binary=nginx,
        nginx_orphan_timeout=nginx_orphan_timeout,
        rebalance=rebalance == "on",
        api_listen=parse_addr(api_listen, field="--api-listen", default_port=7400),
        api_token_file=api_token_file,
        release_on_exit=not keep_on_exit,
        drain_on_shutdown=drain_on_shutdown,
        drain_deadline=drain_deadline,
        compact_interval=parse_interval(compact_interval),
        etcd_quota_bytes=parse_bytes(etcd_quota_bytes),
        acme=acme_settings(directory=acme_directory, email=acme_email, ca_file=acme_ca_file, interval=acme_interval),
    )


def acme_settings(*, directory: str, email: str, ca_file: str, interval: float) -> AcmeSettings | None:
    """``--acme-*`` checked (None without a directory)."""
    if not directory:
        if email or ca_file:
            raise ValidationError("--acme-email and --acme-ca-file need --acme-directory", field="--acme-directory")
        return None
    url = urllib.parse.urlsplit(directory)
    if url.scheme not in ("https", "http") or not url.hostname:
        raise ValidationError(f"{directory!r} is not an http(s) URL", field="--acme-directory")
    if email and (email.count("@") != 1 or any(c.isspace() for c in email) or len(email) > 254):
        raise ValidationError(f"{email!r} is not an e-mail address", field="--acme-email")
    if ca_file and not Path(ca_file).is_file():
        raise ValidationError(f"{ca_file}: no such file", field="--acme-ca-file")
    if not 0.1 <= interval <= 86_400:
        raise ValidationError("must be 0.1 <= seconds <= 86400", field="--acme-interval")
    return AcmeSettings(directory=directory, email=email,
                        ca_file=str(Path(ca_file).absolute()) if ca_file else None, interval=interval)


def agent_config_from(*, own: Mapping[str, Any], global_options: Mapping[str, Any]) -> AgentConfig:
    """:func:`build_agent_config` from the effective values of ``daprdockr agent`` (flags,
    environment and config file merged): ``own`` the agent command's options (named as
    ``build_agent_config``'s arguments), ``global_options`` the global ones, checked here again
    since a file may have given them."""
    g = global_options
    if g["log_format"] not in ("text", "json"):
        raise ValidationError(f"{g['log_format']!r} is not text or json", field="--log-format")
    security = etcd_security(cacert=g["etcd_cacert"], cert=g["etcd_cert"], key=g["etcd_key"],
                             user=g["etcd_user"], password_file=g["etcd_password_file"])
    args = {**own, "allow_bind": own.get("allow_bind") or ()}
    return build_agent_config(etcd=g["etcd"], prefix=g["prefix"], security=security, **args)
