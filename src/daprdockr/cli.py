"""The ``daprdockr`` command line (typer).  Thin: parse, call the store or the agent, print.

Exit codes: 0 ok; 2 invalid input; 3 unknown service/instance; 4 etcd unreachable (the message
names every endpoint tried); 5 ``--wait`` timed out; 1 anything else.  Errors are one line on
stderr, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.statedir import default_state_dir, prepare_state_dir
from daprdockr.clikit.etcdopts import etcd_security
from daprdockr.clikit.output import (
    EXIT_INVALID,
    error_line,
    exit_code_for,
    make_table,
    print_json,
    print_table,
)
from daprdockr.clikit.specfile import merge_flags, merge_onto, parse_pairs, parse_spec_text
from daprdockr.core.endpoints import DEFAULT_ETCD, EtcdSecurity, parse_endpoints
from daprdockr.core.keys import DEFAULT_PREFIX, KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName, validate_label, validate_unicast_ip
from daprdockr.core.state import ClusterState
from daprdockr.core.status import instance_rows, node_rows, progress, service_rows
from daprdockr.errors import DaprDockrError, NotFoundError, ValidationError, WaitTimeoutError
from daprdockr.logging_setup import setup_logging

T = TypeVar("T")
app = typer.Typer(
    help="DaprDockr: declaratively described services on Docker hosts coordinated through etcd.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
svc_app = typer.Typer(help="Manage service specs (desired state).", no_args_is_help=True)
app.add_typer(svc_app, name="svc")


@dataclass(frozen=True, slots=True)
class Globals:
    etcd: str
    prefix: str
    timeout: float
    security: EtcdSecurity | None = None


def _globals(ctx: typer.Context) -> Globals:
    obj = ctx.find_root().obj
    assert isinstance(obj, Globals)
    return obj


def _fail(exc: DaprDockrError) -> typer.Exit:
    error_line(str(exc))
    return typer.Exit(exit_code_for(exc))


def _run(ctx: typer.Context, fn: Callable[[EtcdStore], Awaitable[T]]) -> T:
    """Run ``fn(store)`` on a connected store; DaprDockr errors become one line + exit code."""
    g = _globals(ctx)

    async def main() -> T:
        store = EtcdStore(endpoints=parse_endpoints(g.etcd), schema=KeySchema(g.prefix), timeout=g.timeout,
                          security=g.security)
        try:
            await store.connect()
            return await fn(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except DaprDockrError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _name(text: str) -> ServiceName:
    try:
        return ServiceName.parse(text, field="service name")
    except ValidationError as exc:
        raise _fail(exc) from None


@app.callback()
def main_options(
    ctx: typer.Context,
    etcd: Annotated[str, typer.Option(envvar="DAPRDOCKR_ETCD", help="etcd endpoints, comma separated.")] = DEFAULT_ETCD,
    prefix: Annotated[str, typer.Option(envvar="DAPRDOCKR_PREFIX", help="etcd key prefix.")] = DEFAULT_PREFIX,
    timeout: Annotated[float, typer.Option(help="Seconds per etcd call and endpoint.")] = 2.0,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="-v info, -vv debug.")] = 0,
    log_format: Annotated[str, typer.Option(help="Log format: text or json.")] = "text",
    etcd_cacert: Annotated[Path | None, typer.Option(
        envvar="DAPRDOCKR_ETCD_CACERT", help="CA (PEM) to verify https:// etcd endpoints.")] = None,
    etcd_cert: Annotated[Path | None, typer.Option(
        envvar="DAPRDOCKR_ETCD_CERT", help="Client certificate (PEM) for etcd.")] = None,
    etcd_key: Annotated[Path | None, typer.Option(envvar="DAPRDOCKR_ETCD_KEY", help="Client key (PEM).")] = None,
    etcd_user: Annotated[str | None, typer.Option(envvar="DAPRDOCKR_ETCD_USER", help="etcd user (auth).")] = None,
    etcd_password_file: Annotated[Path | None, typer.Option(
        envvar="DAPRDOCKR_ETCD_PASSWORD_FILE",
        help="File with the etcd user's password (or set DAPRDOCKR_ETCD_PASSWORD).")] = None,
) -> None:
    """Global options (also from DAPRDOCKR_ETCD / DAPRDOCKR_PREFIX and DAPRDOCKR_ETCD_*)."""
    try:
        parse_endpoints(etcd)
        KeySchema(prefix)
        if log_format not in ("text", "json"):
            raise ValidationError(f"{log_format!r} is not text or json", field="--log-format")
        security = etcd_security(cacert=etcd_cacert, cert=etcd_cert, key=etcd_key, user=etcd_user,
                                 password_file=etcd_password_file)
    except ValidationError as exc:
        raise _fail(exc) from None
    setup_logging(verbosity=verbose, fmt=log_format)
    ctx.obj = Globals(etcd=etcd, prefix=prefix, timeout=timeout, security=security)


# ---------------------------------------------------------------------------------------- svc
def _load_files(path: str) -> list[dict[str, Any]]:
    if path == "-":
        return parse_spec_text(sys.stdin.read(), source="<stdin>")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValidationError(f"{path}: {exc.strerror}") from exc
    return parse_spec_text(text, source=path)


async def _wait_ready(store: EtcdStore, spec: ServiceSpec, *, limit: float, quiet: bool) -> None:
    """Watch etcd until ``spec`` is fully running; raise on timeout naming the failures."""
    deadline = time.monotonic() + limit
    tty = sys.stderr.isatty()
    last = ""
    while True:
        state = await store.snapshot()
        p = progress(state, spec)
        line = f"{spec.name}: {p.running}/{p.desired} running" + (f", {len(p.failed)} failed" if p.failed else "")
        if line != last and not quiet:
            print(f"\r{line}" if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
            last = line
        if p.done:
            if tty and not quiet:
                print(file=sys.stderr)
            return
        if time.monotonic() > deadline:
            if tty and not quiet:
                print(file=sys.stderr)
            reason = "; ".join(p.failed) or f"only {p.running}/{p.desired} running"
            raise WaitTimeoutError(f"{spec.name} not ready after {limit:g}s: {reason}")
        await asyncio.sleep(0.2)


@svc_app.command("set")
def svc_set(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="<service>.<group>, e.g. web.myapp")] = None,
    image: Annotated[str | None, typer.Option(help="Docker image.")] = None,
    instances: Annotated[int | None, typer.Option(help="Number of instances (>= 0).")] = None,
    cmd: Annotated[list[str] | None, typer.Option(help="Command argument (repeat for each arg).")] = None,
    cmd_json: Annotated[str | None, typer.Option(help='Command as a JSON list: \'["sh","-c","..."]\'.')] = None,
    http_host: Annotated[str | None, typer.Option(help="Hostname routed by nginx.")] = None,
    http_port: Annotated[int | None, typer.Option(help="Container port nginx routes to.")] = None,
    env: Annotated[list[str] | None, typer.Option(help="KEY=VALUE (repeatable).")] = None,
    port: Annotated[list[str] | None, typer.Option(help="Extra container port: 8081 or 53/udp.")] = None,
    label: Annotated[list[str] | None, typer.Option(help="Container label KEY=VALUE.")] = None,
    file: Annotated[str | None, typer.Option("-f", "--file", help="Spec file (YAML/JSON), - for stdin.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait until all instances run.")] = False,
    wait_timeout: Annotated[float, typer.Option("--timeout", help="Seconds for --wait.")] = 60.0,
) -> None:
    """Create or update a service.  Flags given are merged onto the existing spec.

    Examples:

      daprdockr svc set web.myapp --image nginx:alpine --instances 3 --http-host web.example.com --http-port 80

      daprdockr svc set web.myapp --instances 5          # scale, keep everything else

      daprdockr svc set -f web.yaml --wait
    """
    try:
        if cmd and cmd_json:
            raise ValidationError("give --cmd or --cmd-json, not both", field="cmd")
        cmd_list: list[str] | None = list(cmd) if cmd else None
        if cmd_json is not None:
            try:
                cmd_list = json.loads(cmd_json)
            except ValueError as exc:
                raise ValidationError(f"--cmd-json is not JSON: {exc}", field="cmd") from exc
        flags: dict[str, Any] = {
            "image": image, "instances": instances, "cmd": cmd_list, "http_host": http_host,
            "http_port": http_port, "ports": list(port) if port else None,
            "env": parse_pairs(env, field="env") if env else None,
            "labels": parse_pairs(label, field="labels") if label else None,
        }
        docs = _load_files(file) if file else [{}]
        cli_name = ServiceName.parse(name, field="service name") if name else None
        if len(docs) > 1 and (cli_name or any(v is not None for v in flags.values())):
            raise ValidationError("a file with several specs cannot be combined with a name or flags")
    except ValidationError as exc:
        raise _fail(exc) from None

    # A file holds whole specs (replaced, not merged): all are validated before anything is written.
    try:
        whole = [ServiceSpec.from_dict(merge_flags(doc, flags), name=cli_name) for doc in docs] if file else []
        if not file and cli_name is None:
            raise ValidationError("give the service name (<service>.<group>) or a 'name' in the file")
    except ValidationError as exc:
        raise _fail(exc) from None

    async def apply(store: EtcdStore) -> list[ServiceSpec]:
        specs = list(whole)
        for spec in whole:
            await store.put_service(spec)
        if cli_name is not None and not file:  # merge: one transaction on the key, retried on conflict
            specs.append(await store.update_service(
                cli_name, lambda cur, bad: merge_onto(cli_name, cur, bad, flags)))
        for spec in specs:
            print(f"{spec.name}: {spec.instances} instance(s) of {spec.image}", file=sys.stderr)
        if wait:
            for spec in specs:
                await _wait_ready(store, spec, limit=wait_timeout, quiet=False)
        return specs

    _run(ctx, apply)


@svc_app.command("get")
def svc_get(ctx: typer.Context, name: Annotated[str, typer.Argument(help="<service>.<group>")]) -> None:
    """Print a service spec as JSON.   Example: daprdockr svc get web.myapp"""
    target = _name(name)

    async def get(store: EtcdStore) -> ServiceSpec:
        spec = await store.get_service(target)
        if spec is None:
            raise NotFoundError(f"service {target} not found")
        return spec

    print_json(_run(ctx, get).to_dict())


@svc_app.command("del")
def svc_del(ctx: typer.Context, name: Annotated[str, typer.Argument(help="<service>.<group>")]) -> None:
    """Delete a service; agents stop its instances.   Example: daprdockr svc del web.myapp"""
    target = _name(name)

    async def delete(store: EtcdStore) -> None:
        if not await store.delete_service(target):
            raise NotFoundError(f"service {target} not found")

    _run(ctx, delete)
    print(f"{target} deleted", file=sys.stderr)


SERVICE_COLUMNS = ["service", "status", "image", "desired", "running", "failed", "http_host", "invalid"]


@svc_app.command("ls")
def svc_ls(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """List services: desired vs running.   Example: daprdockr svc ls --json"""
    rows = service_rows(_run(ctx, lambda s: s.snapshot()))
    if as_json:
        print_json(rows)
    else:
        print_table(rows, SERVICE_COLUMNS)


# ---------------------------------------------------------------------------------------- views
@app.command()
def status(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Cluster summary: live nodes and services desired vs running.   Example: daprdockr status"""
    state = _run(ctx, lambda s: s.snapshot())
    now = time.time()
    node_list, services = node_rows(state, now=now), service_rows(state)
    if as_json:
        print_json({"nodes": node_list, "services": services, "revision": state.revision,
                    "skipped_keys": [k for k, _ in state.skipped]})
        return
    print_table(node_list, ["node", "address", "instances", "capacity", "up"], title="nodes")
    print_table(services, SERVICE_COLUMNS, title="services")


@app.command()
def nodes(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Live nodes (agents) with their instance counts.   Example: daprdockr nodes"""
    rows = node_rows(_run(ctx, lambda s: s.snapshot()), now=time.time())
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["node", "address", "instances", "capacity", "up", "dns", "http", "api"])


def _ps_rows(state: ClusterState, name: ServiceName | None) -> list[dict[str, Any]]:
    return instance_rows(state, now=time.time(), service=name)


PS_COLUMNS = ["service", "instance", "node", "address", "ports", "state", "age", "container_id", "error"]


@app.command()
def ps(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Only this service.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow changes (etcd watch).")] = False,
) -> None:
    """Instances: number, node, address, ports, state, age, container.   Example: daprdockr ps web.myapp -w"""
    target = _name(name) if name else None
    if watch:
        _watch(ctx, target, as_json=as_json)
        return
    rows = _ps_rows(_run(ctx, lambda s: s.snapshot()), target)
    if as_json:
        print_json(rows)
    else:
        print_table(rows, PS_COLUMNS)


def _watch(ctx: typer.Context, target: ServiceName | None, *, as_json: bool) -> None:
    """Re-render on every etcd watch event (not polling)."""

    async def follow(store: EtcdStore) -> None:
        from rich.console import Console
        from rich.live import Live

        from daprdockr.agent.mirror import StateMirror

        mirror = StateMirror(schema=store.schema)
        kvs, rev = await store.read_prefix(store.schema.root)
        mirror.reset(kvs, revision=rev)
        console = Console()
        live = Live(console=console, auto_refresh=False) if console.is_terminal and not as_json else None

        def show() -> None:
            rows = _ps_rows(mirror.state(), target)
            if as_json:
                print(json.dumps({"revision": mirror.revision, "instances": rows}), flush=True)
            elif live is not None:
                live.update(make_table(rows, PS_COLUMNS), refresh=True)
            else:
                print(f"--- revision {mirror.revision}", flush=True)
                print_table(rows, PS_COLUMNS)

        if live is not None:
            live.start()
        try:
            show()
            async for ev in store.watch(start_revision=rev + 1):
                if ev.kind == "resync":
                    kvs, rev = await store.read_prefix(store.schema.root)
                    mirror.reset(kvs, revision=rev)
                elif not mirror.apply(ev):
                    continue
                show()
        finally:
            if live is not None:
                live.stop()

    _run(ctx, follow)


@app.command("watch")
def watch_cmd(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Only this service.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per change.")] = False,
) -> None:
    """Live view of instances, driven by the etcd watch.   Example: daprdockr watch --json"""
    _watch(ctx, _name(name) if name else None, as_json=as_json)


@app.command()
def logs(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="<service>.<group>")],
    instance: Annotated[int, typer.Option("-n", "--instance", help="Instance number.")] = 1,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Stream new lines.")] = False,
    tail: Annotated[int, typer.Option(help="Lines from the end.")] = 100,
    api_token_file: Annotated[Path | None, typer.Option(
        envvar="DAPRDOCKR_API_TOKEN_FILE",
        help="File with the agent API token [default: the agent's <state dir>/api-token when readable].")] = None,
) -> None:
    """Container logs of an instance, fetched from the agent that runs it.

    Example: daprdockr logs web.myapp -n 2 -f
    """
    target = _name(name)

    async def fetch(store: EtcdStore) -> None:
        from daprdockr.clikit.logs import client_token, stream_logs

        state = await store.snapshot()
        rec = state.instances.get((target, instance))
        if rec is None:
            raise NotFoundError(f"instance {instance} of {target} not found")
        node = state.nodes.get(rec.node)
        if node is None or not node.api:
            raise DaprDockrError(f"node {rec.node} runs instance {instance} but publishes no API address")
        token = client_token(api_token_file)
        await stream_logs(api=node.api, service=target, number=instance, tail=tail, follow=follow, token=token)

    _run(ctx, fetch)


# ---------------------------------------------------------------------------------------- daemons
def _addr(text: str, *, field: str, default_port: int) -> tuple[str, int] | None:
    if text.lower() in ("off", "none", ""):
        return None
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    if not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValidationError(f"{text!r} is not ADDR:PORT or off", field=field)
    return (host, int(port))


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
    api_token_file: Path | None = None, security: EtcdSecurity | None = None,
) -> Any:
    from daprdockr.agent.config import AgentConfig

    if ttl < 1:
        raise ValidationError("must be >= 1 second", field="--ttl")
    if not -1 <= dns_workers <= 16:
        raise ValidationError("must be -1 (auto) or 0..16", field="--dns-workers")
    upstreams = tuple(a for a in (_addr(u, field="--dns-upstream", default_port=53) for u in dns_upstream or ())
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
        dns_listen=_addr(dns_listen, field="--dns-listen", default_port=53),
        dns_upstreams=upstreams,
        dns_ttl=dns_ttl,
        dns_workers=auto_dns_workers() if dns_workers < 0 else dns_workers,
        http_listen=_addr(http_listen, field="--http-listen", default_port=80),
        nginx_binary=nginx,
        api_listen=_addr(api_listen, field="--api-listen", default_port=7400),
        api_token_file=api_token_file,
        release_on_exit=not keep_on_exit,
    )


@app.command()
def agent(
    ctx: typer.Context,
    node_id: Annotated[str | None, typer.Option(help="Node id (default: hostname).")] = None,
    advertise_ip: Annotated[str, typer.Option(help="Address ports are published on.")] = "127.0.0.1",
    ttl: Annotated[int, typer.Option(help="Lease TTL in seconds.")] = 5,
    capacity: Annotated[int, typer.Option(help="Max instances on this node (0 = unlimited).")] = 0,
    docker: Annotated[str | None, typer.Option(help="Docker engine URL.")] = None,
    state_dir: Annotated[Path | None, typer.Option(
        help="Private directory (0700) for nginx config, pid files, logs, the API token "
             "[default: /var/lib/daprdockr as root, else $XDG_STATE_HOME/daprdockr].")] = None,
    dns_listen: Annotated[str, typer.Option(help="DNS ADDR:PORT or off.")] = "127.0.0.1:53",
    dns_upstream: Annotated[list[str] | None, typer.Option(help="Upstream resolver ADDR[:PORT].")] = None,
    dns_ttl: Annotated[int, typer.Option(help="TTL of .container answers.")] = 5,
    dns_workers: Annotated[int, typer.Option(
        help="Extra DNS processes sharing the address (SO_REUSEPORT); -1 = one per spare core, max 2.")] = -1,
    http_listen: Annotated[str, typer.Option(help="nginx ADDR:PORT or off.")] = "0.0.0.0:80",
    nginx: Annotated[str, typer.Option(help="nginx binary.")] = "nginx",
    api_listen: Annotated[str, typer.Option(help="Agent HTTP API ADDR:PORT or off.")] = "127.0.0.1:7400",
    keep_on_exit: Annotated[bool, typer.Option(help="Leave containers running on SIGTERM.")] = False,
    api_token_file: Annotated[Path | None, typer.Option(
        envvar="DAPRDOCKR_API_TOKEN_FILE",
        help="File with the API bearer token (needed when the API listens beyond loopback) "
             "[default: <state dir>/api-token, generated on first start].")] = None,
) -> None:
    """Run the agent on this host.

    Example: daprdockr agent --node-id n1 --advertise-ip 127.0.0.11 --http-listen 127.0.0.11:80
    """
    g = _globals(ctx)
    try:
        config = build_agent_config(
            etcd=g.etcd, prefix=g.prefix, node_id=node_id, advertise_ip=advertise_ip, ttl=ttl, capacity=capacity,
            docker=docker, state_dir=state_dir, dns_listen=dns_listen, dns_upstream=dns_upstream,
            dns_ttl=dns_ttl, http_listen=http_listen, nginx=nginx, api_listen=api_listen,
            keep_on_exit=keep_on_exit, dns_workers=dns_workers, api_token_file=api_token_file,
            security=g.security,
        )
        prepare_state_dir(config.state_dir)
    except ValidationError as exc:
        raise _fail(exc) from None
    from daprdockr.agent.main import run_agent

    root = logging.getLogger()
    root.setLevel(min(root.level, logging.INFO))  # state changes are logged at INFO
    raise typer.Exit(run_agent(config))


@app.command()
def dns(
    ctx: typer.Context,
    listen: Annotated[str, typer.Option(help="ADDR:PORT")] = "127.0.0.1:53",
    dns_upstream: Annotated[list[str] | None, typer.Option(help="Upstream resolver ADDR[:PORT].")] = None,
    ttl: Annotated[int, typer.Option(help="TTL of .container answers.")] = 5,
) -> None:
    """Run only the DNS server for .container (fed by the etcd watch).

    Example: daprdockr dns --listen 127.0.0.1:5353
    """
    g = _globals(ctx)
    try:
        addr = _addr(listen, field="--listen", default_port=53)
        if addr is None:
            raise ValidationError("must be ADDR:PORT", field="--listen")
        upstreams = [a for a in (_addr(u, field="--dns-upstream", default_port=53) for u in dns_upstream or ())
                     if a is not None]
    except ValidationError as exc:
        raise _fail(exc) from None
    from daprdockr.agent.dns_only import run_dns

    try:
        code = run_dns(endpoints=parse_endpoints(g.etcd), prefix=g.prefix, listen=addr,
                       upstreams=upstreams or None, ttl=ttl, security=g.security)
    except DaprDockrError as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)


def main() -> None:
    """Console script entry point."""
    try:
        app()
    except ValidationError as exc:
        error_line(str(exc))
        sys.exit(EXIT_INVALID)


logging.getLogger(__name__).addHandler(logging.NullHandler())
