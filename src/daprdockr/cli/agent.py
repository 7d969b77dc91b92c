"""``daprdockr agent`` and ``daprdockr dns``: run the agent, or only the DNS server.

``daprdockr agent`` also reads its flags from a file (``--config``: every flag of the agent, and
the global etcd and logging options, is a key: :mod:`daprdockr.clikit.agentfile`), shows the
effective configuration (``--print-config``) and installs itself as a systemd service
(``agent install`` / ``agent uninstall``: :mod:`daprdockr.clikit.agentinstall`).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Annotated

import typer

from daprdockr.cli.app import app, fail, globals_of, main_options
from daprdockr.core.agentfile import Effective, OptionDef, Source
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.systemd_unit import DEFAULT_CONFIG, DEFAULT_UNIT_DIR, UNIT_NAME
from daprdockr.errors import DaprDockrError, ValidationError

agent_app = typer.Typer()
app.add_typer(agent_app, name="agent")


@agent_app.callback(invoke_without_command=True)
def agent(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(
        "--config", help="Agent configuration file (.toml, .yaml): any flag below, and the global "
                         "--etcd/--prefix/--etcd-*/--log-format/--verbose, as a key (dashes or underscores). "
                         "Flags win over the environment (DAPRDOCKR_*), which wins over the file.")] = None,
    print_config: Annotated[bool, typer.Option(
        help="Print the effective configuration as a TOML file, each value's source (flag, env, file, default) "
             "in a comment, and exit.")] = False,
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
    https_listen: Annotated[str, typer.Option(
        help="nginx's HTTPS ADDR:PORT (certificates by SNI from etcd, HTTP/2, TLS 1.2+), off, or auto: "
             "port 443 of the advertise address when etcd holds any certificate at the agent's start.")] = "auto",
    allow_insecure_keys: Annotated[bool, typer.Option(
        help="Serve the private keys stored in etcd even when etcd is reached with neither TLS nor auth "
             "(anyone who can reach etcd can read them; see SECURITY.md).")] = False,
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
    acme_directory: Annotated[str, typer.Option(
        help="ACME directory URL (e.g. https://acme-v02.api.letsencrypt.org/directory): order and renew "
             "certificates for every HTTPS host without a manual one, one agent per host at a time; "
             "none by default.")] = "",
    acme_email: Annotated[str, typer.Option(help="Contact address of the cluster's ACME account.")] = "",
    acme_ca_file: Annotated[str, typer.Option(
        help="PEM file of the CA to trust for the ACME directory's HTTPS (a private CA); default: the "
             "system's roots.")] = "",
    acme_interval: Annotated[float, typer.Option(
        help="Seconds between two looks at which hosts need a certificate (also at once when the services "
             "change).")] = 10.0,
) -> None:
    """Run the agent on this host.

    Example: daprdockr agent --node-id n1 --advertise-ip 127.0.0.11 --http-listen 127.0.0.11:80
    (or: daprdockr agent --config /etc/daprdockr/agent.toml)
    """
    if ctx.invoked_subcommand is not None:
        return
    from daprdockr.adapters.statedir import prepare_state_dir  # (here: the other commands start faster)
    from daprdockr.clikit.agentconfig import agent_config_from
    from daprdockr.core.agentfile import render_effective
    from daprdockr.logging_setup import setup_logging

    try:
        values = effective_values(ctx, config)
        if print_config:  # (what the agent would start with; its values are checked when it starts)
            typer.echo(render_effective(values), nl=False)
            raise typer.Exit(0)
        plain = {k: v.value for k, v in values.items()}
        settings = agent_config_from(own={k: v for k, v in plain.items() if k in ctx.params},
                                     global_options={k: v for k, v in plain.items() if k not in ctx.params})
        prepare_state_dir(settings.state_dir)
    except ValidationError as exc:
        raise fail(exc) from None
    from daprdockr.agent.main import run_agent

    setup_logging(verbosity=int(str(plain["verbose"])), fmt=str(plain["log_format"]))  # (a file may set them)
    _daemon_logging()
    raise typer.Exit(run_agent(settings))


NOT_KEYS = frozenset({"ctx", "config", "print_config"})
# the global options an agent does not use: --timeout is the CLI's per-call etcd timeout, --version
# prints the versions and exits
NOT_AGENT_GLOBALS = frozenset({"timeout", "show_version"})


def agent_keys() -> dict[str, OptionDef]:
    """Every config file key: the agent's own flags and the global options it uses, read off the
    two functions that define them."""
    from daprdockr.clikit.agentfile import options_of

    return {**options_of(main_options, skip=NOT_AGENT_GLOBALS), **options_of(agent, skip=NOT_KEYS)}


def effective_values(ctx: typer.Context, config: Path | None) -> dict[str, Effective]:
    """The agent's configuration: flag > environment > file > default, with each value's source."""
    from daprdockr.clikit.agentfile import read_agent_file, source_of
    from daprdockr.core.agentfile import effective

    keys = agent_keys()
    file = read_agent_file(config, options=keys) if config is not None else {}
    root = ctx.find_root()
    given: dict[str, object] = {}
    given_from: dict[str, Source] = {}
    for name in keys:
        owner = ctx if name in ctx.params else root
        given[name] = owner.params[name]
        given_from[name] = source_of(owner, name)
    return effective(given=given, given_from=given_from, file=file)


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



@agent_app.command()
def install(
    config: Annotated[Path, typer.Option(help="The agent's configuration file (it must exist).")] = Path(
        DEFAULT_CONFIG),
    dry_run: Annotated[bool, typer.Option(help="Print the unit instead of writing it.")] = False,
    unit_dir: Annotated[Path, typer.Option(help="Where the unit is written.")] = Path(DEFAULT_UNIT_DIR),
) -> None:
    """Install the agent as a systemd service (daprdockr-agent.service: Type=notify, watchdog).

    Example: daprdockr agent install --config /etc/daprdockr/agent.toml --dry-run
    """
    from daprdockr.clikit.agentinstall import unit_text, write_unit

    try:
        text = unit_text(config=config, options=agent_keys(), drain_default=_default_of("drain_deadline"))
        if dry_run:
            typer.echo(text, nl=False)
            return
        path = write_unit(text, unit_dir=unit_dir)
    except ValidationError as exc:
        raise fail(exc) from None
    typer.echo(f"wrote {path}; now: systemctl daemon-reload && systemctl enable --now {UNIT_NAME}")


@agent_app.command()
def uninstall(
    unit_dir: Annotated[Path, typer.Option(help="Where the unit was written.")] = Path(DEFAULT_UNIT_DIR),
) -> None:
    """Remove the agent's systemd unit (stop it first: systemctl disable --now daprdockr-agent).

    Example: daprdockr agent uninstall
    """
    from daprdockr.clikit.agentinstall import remove_unit

    try:
        path = remove_unit(unit_dir=unit_dir)
    except ValidationError as exc:
        raise fail(exc) from None
    if path is None:
        typer.echo(f"no {UNIT_NAME} in {unit_dir}")
    else:
        typer.echo(f"removed {path}; now: systemctl daemon-reload")


def _default_of(name: str) -> float:
    """The default of one of the agent's flags, from its definition."""
    default = inspect.signature(agent).parameters[name].default
    assert isinstance(default, float)
    return default
