"""``daprdockr agent`` and ``daprdockr dns``: run the agent, or only the DNS server."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from daprdockr.cli.app import app, fail, globals_of
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.errors import DaprDockrError, ValidationError


@app.command()
def agent(
    ctx: typer.Context,
    node_id: Annotated[str | None, typer.Option(help="Node id (default: hostname).")] = None,
    advertise_ip: Annotated[str, typer.Option(
        help="Address ports are published on and DNS answers point to; auto: the address of the interface "
             "whose subnet holds the default gateway (--route-file).")] = "auto",
    route_file: Annotated[Path, typer.Option(help="Route table for --advertise-ip auto.")] = Path("/proc/net/route"),
    ttl: Annotated[int, typer.Option(help="Lease TTL in seconds.")] = 5,
    capacity: Annotated[int, typer.Option(help="Max instances on this node (0 = unlimited).")] = 0,
    docker: Annotated[str | None, typer.Option(help="Docker engine URL.")] = None,
    runtime: Annotated[str, typer.Option(
        help="docker, or hollow: a test node whose containers exist only in the agent's memory (no Docker; "
             "etcd, DNS and nginx stay real; see README \"Hollow nodes\").")] = "docker",
    hollow_start_delay: Annotated[float, typer.Option(help="--runtime hollow: seconds a container start takes.")] = 0.0,
    hollow_failure_rate: Annotated[float, typer.Option(
        help="--runtime hollow: fraction of container starts that fail (0..1).")] = 0.0,
    hollow_seed: Annotated[int | None, typer.Option(
        help="--runtime hollow: seed of the failure draws (default: unseeded).")] = None,
    state_dir: Annotated[Path | None, typer.Option(
        help="Private directory (0700) for nginx config, pid files, logs, the API token "
             "[default: /var/lib/daprdockr as root, else $XDG_STATE_HOME/daprdockr].")] = None,
    dns_listen: Annotated[str, typer.Option(
        help="DNS ADDR:PORT or off; auto: port 53 of the advertise address (plus 127.0.0.1:53 when it is not "
             "loopback).  On port 53 it is also the DNS server of the containers that can reach it.")] = "auto",
    dns_upstream: Annotated[list[str] | None, typer.Option(help="Upstream resolver ADDR[:PORT].")] = None,
    dns_ttl: Annotated[int, typer.Option(help="TTL of .container answers.")] = 5,
    dns_allow: Annotated[str, typer.Option(
        help="Networks (CIDR, comma separated) whose clients may also use the DNS server for names outside "
             ".container and are never rate limited; added to loopback, this host's own addresses and the "
             "networks of this node's containers, which are always allowed.")] = "",
    dns_workers: Annotated[int, typer.Option(
        help="Extra DNS processes sharing the address (SO_REUSEPORT); -1 = one per spare core, max 2.")] = -1,
    http_listen: Annotated[str, typer.Option(help="nginx ADDR:PORT or off.")] = "0.0.0.0:80",
    nginx: Annotated[str, typer.Option(help="nginx binary.")] = "nginx",
    nginx_orphan_timeout: Annotated[float, typer.Option(
        help="An nginx this agent leaves serving (it was killed, or --keep-on-exit) quits by itself this many "
             "seconds after the agent's last heartbeat, unless the next agent adopts it.")] = 60.0,
    api_listen: Annotated[str, typer.Option(help="Agent HTTP API ADDR:PORT or off.")] = "127.0.0.1:7400",
    keep_on_exit: Annotated[bool, typer.Option(help="Leave containers running on SIGTERM.")] = False,
    rebalance: Annotated[str, typer.Option(
        help="on: move instances (start-first, one per service at a time) so each service is spread evenly "
             "across the nodes; off: never (a service can also opt out with rebalance: false).")] = "on",
    drain_on_shutdown: Annotated[bool, typer.Option(
        help="On SIGTERM first drain the node: every instance starts on another node and gets healthy "
             "before it stops here.")] = False,
    drain_deadline: Annotated[float, typer.Option(help="The most --drain-on-shutdown waits (seconds).")] = 120.0,
    allow_bind: Annotated[list[str] | None, typer.Option(
        help="Host path containers may bind-mount (repeat for more); none by default.")] = None,
    docker_config: Annotated[str, typer.Option(
        help="Docker client configuration whose registry logins (auths, credHelpers, credsStore) image pulls "
             "use, re-read when it changes; none: pull without credentials "
             "[default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json].", show_default=False)] = "",
    api_token_file: Annotated[Path | None, typer.Option(
        envvar="DAPRDOCKR_API_TOKEN_FILE",
        help="File with the API bearer token (needed when the API listens beyond loopback) "
             "[default: <state dir>/api-token, generated on first start].")] = None,
    compact_interval: Annotated[str, typer.Option(
        envvar="DAPRDOCKR_COMPACT_INTERVAL",
        help="Seconds between compactions of etcd's history (300, 5m), by one agent at a time, to the revision "
             "seen one interval earlier; 0 or off: this agent never compacts.")] = "300",
    etcd_quota_bytes: Annotated[str, typer.Option(
        envvar="DAPRDOCKR_ETCD_QUOTA_BYTES",
        help="etcd's --quota-backend-bytes (2GiB, 16MiB or bytes), which etcd's API does not tell: what "
             "/healthz and the metrics show the database size against.")] = "2GiB",
) -> None:
    """Run the agent on this host.

    Example: daprdockr agent --node-id n1 --advertise-ip 127.0.0.11 --http-listen 127.0.0.11:80
    """
    from daprdockr.adapters.statedir import prepare_state_dir  # (here: the other commands start faster)
    from daprdockr.clikit.agentconfig import build_agent_config

    g = globals_of(ctx)
    try:
        config = build_agent_config(
            etcd=g.etcd, prefix=g.prefix, node_id=node_id, advertise_ip=advertise_ip, ttl=ttl, capacity=capacity,
            docker=docker, state_dir=state_dir, dns_listen=dns_listen, dns_upstream=dns_upstream,
            dns_ttl=dns_ttl, http_listen=http_listen, nginx=nginx, api_listen=api_listen,
            keep_on_exit=keep_on_exit, dns_workers=dns_workers, api_token_file=api_token_file,
            security=g.security, dns_allow=dns_allow, drain_on_shutdown=drain_on_shutdown,
            drain_deadline=drain_deadline, allow_bind=allow_bind or (), route_file=route_file,
            nginx_orphan_timeout=nginx_orphan_timeout, rebalance=rebalance, runtime=runtime,
            hollow_start_delay=hollow_start_delay, hollow_failure_rate=hollow_failure_rate, hollow_seed=hollow_seed,
            docker_config=docker_config, compact_interval=compact_interval, etcd_quota_bytes=etcd_quota_bytes,
        )
        prepare_state_dir(config.state_dir)
    except ValidationError as exc:
        raise fail(exc) from None
    from daprdockr.agent.main import run_agent

    _daemon_logging()
    raise typer.Exit(run_agent(config))


def _daemon_logging() -> None:
    """A daemon logs its state changes (INFO) and warnings, not only the CLI's errors."""
    root = logging.getLogger()
    root.setLevel(min(root.level, logging.INFO))


@app.command()
def dns(
    ctx: typer.Context,
    listen: Annotated[str, typer.Option(help="ADDR:PORT")] = "127.0.0.1:53",
    dns_upstream: Annotated[list[str] | None, typer.Option(help="Upstream resolver ADDR[:PORT].")] = None,
    ttl: Annotated[int, typer.Option(help="TTL of .container answers.")] = 5,
    dns_allow: Annotated[str, typer.Option(
        help="Networks (CIDR, comma separated) whose clients may also use forwarding and are never rate "
             "limited; added to loopback and this host's own addresses, which are always allowed.")] = "",
) -> None:
    """Run only the DNS server for .container (fed by the etcd watch).

    Example: daprdockr dns --listen 127.0.0.1:5353
    """
    from daprdockr.clikit.agentconfig import parse_addr, parse_networks  # (here: the other commands start faster)

    g = globals_of(ctx)
    try:
        addr = parse_addr(listen, field="--listen", default_port=53)
        if addr is None:
            raise ValidationError("must be ADDR:PORT", field="--listen")
        upstreams = [a for a in (parse_addr(u, field="--dns-upstream", default_port=53) for u in dns_upstream or ())
                     if a is not None]
        allow = parse_networks(dns_allow, field="--dns-allow")
    except ValidationError as exc:
        raise fail(exc) from None
    from daprdockr.agent.dns_only import run_dns

    _daemon_logging()
    try:
        code = run_dns(endpoints=parse_endpoints(g.etcd), prefix=g.prefix, listen=addr,
                       upstreams=upstreams or None, ttl=ttl, security=g.security, allow=allow)
    except DaprDockrError as exc:
        raise fail(exc) from None
    raise typer.Exit(code)

