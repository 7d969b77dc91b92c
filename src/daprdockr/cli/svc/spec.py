"""``daprdockr svc set`` (merge, one transaction), ``get``, ``del``, ``ls``; ``--wait`` follows the
rollout (:mod:`daprdockr.cli.progress`; see :mod:`.rollout` for history, rollback, status, resume).

Progress lines go to stderr: text (control characters from etcd escaped) or, with ``--json``, one
JSON object per line; the command's result (``--json``) goes to stdout."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.cli.app import ApiOption, FromEtcdOption, fail, service_name, svc_app, with_store
from daprdockr.cli.progress import wait_ready
from daprdockr.clikit.cluster_rows import cluster_rows
from daprdockr.clikit.lifecycleflags import health_flags, update_flags
from daprdockr.clikit.output import print_json, print_table
from daprdockr.clikit.specfile import load_spec_docs, merge_flags, merge_onto, parse_pairs
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.errors import NotFoundError, ValidationError


def _load_files(path: str) -> list[dict[str, Any]]:
    return [doc.data for doc in load_spec_docs([path])]


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
    file: Annotated[str | None, typer.Option(
        "-f", "--file", help="Spec file (YAML/JSON, ours or the original DaprDockr's JSON), - for stdin.")] = None,
    user: Annotated[str | None, typer.Option(help="Run as <user>[:<group>] (names or ids).")] = None,
    workdir: Annotated[str | None, typer.Option(help="Working directory in the container.")] = None,
    entrypoint: Annotated[list[str] | None, typer.Option(help="Entrypoint argument (repeat for each).")] = None,
    hostname: Annotated[str | None, typer.Option(help="Container host name [default: <n>.<service>.<group>].")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory limit: bytes or like 512m, 1g.")] = None,
    cpus: Annotated[float | None, typer.Option(help="CPU limit, e.g. 0.5.")] = None,
    cpu_shares: Annotated[int | None, typer.Option(help="Relative CPU weight (2..262144).")] = None,
    pids_limit: Annotated[int | None, typer.Option(help="Most processes in the container.")] = None,
    volume: Annotated[list[str] | None, typer.Option(
        help="/path (anonymous), name:/path or /host/path:/path, optionally :ro (repeat; replaces the list). "
             "Host paths only under an agent's --allow-bind paths.")] = None,
    network: Annotated[str | None, typer.Option(help="bridge (default), host or none.")] = None,
    health_http: Annotated[str | None, typer.Option(help="Health check: HTTP GET of this path (2xx/3xx).")] = None,
    health_port: Annotated[int | None, typer.Option(help="Container port of the HTTP check.")] = None,
    health_tcp: Annotated[int | None, typer.Option(help="Health check: TCP connect to this container port.")] = None,
    health_cmd: Annotated[str | None, typer.Option(
        help="Health check: command run in the container (JSON list, or a sh -c line); exit 0 = healthy.")] = None,
    health_docker: Annotated[bool, typer.Option(help="Health: the image's own HEALTHCHECK status.")] = False,
    no_health: Annotated[bool, typer.Option(help="Remove the health check.")] = False,
    health_interval: Annotated[str | None, typer.Option(help="Between checks, e.g. 5s.")] = None,
    health_timeout: Annotated[str | None, typer.Option(help="Per check, e.g. 2s.")] = None,
    health_retries: Annotated[int | None, typer.Option(help="Consecutive failures that make it unhealthy.")] = None,
    health_start_period: Annotated[str | None, typer.Option(help="Failures after start that do not count.")] = None,
    restart_unhealthy_after: Annotated[str | None, typer.Option(
        help="Restart a container unhealthy this long (0: never).")] = None,
    update_parallel: Annotated[int | None, typer.Option(help="Replacements at once across the cluster.")] = None,
    update_order: Annotated[str | None, typer.Option(help="start-first or stop-first.")] = None,
    update_min_healthy: Annotated[str | None, typer.Option(
        help="How long a replacement must stay healthy.")] = None,
    update_deadline: Annotated[str | None, typer.Option(help="Time for a replacement to get there.")] = None,
    update_on_failure: Annotated[str | None, typer.Option(help="rollback or pause.")] = None,
    stop_signal: Annotated[str | None, typer.Option(help="Signal that asks a container to stop.")] = None,
    stop_timeout: Annotated[str | None, typer.Option(help="Grace before SIGKILL, e.g. 30s.")] = None,
    proxy_balancer: Annotated[str | None, typer.Option(
        help="least-request (default: skips stalled instances) or round-robin.")] = None,
    proxy_connect_timeout: Annotated[str | None, typer.Option(help="nginx's connect timeout per try [5s].")] = None,
    proxy_read_timeout: Annotated[str | None, typer.Option(
        help="nginx's wait for a response per try [60s]; a GET that times out is retried elsewhere.")] = None,
    https: Annotated[str | None, typer.Option(
        help="off (default: HTTP only), on (HTTP and HTTPS), redirect (HTTP answers 308 to HTTPS) or only "
             "(HTTPS only) for --http-host.")] = None,
    hsts: Annotated[int | None, typer.Option(
        help="Strict-Transport-Security max-age (seconds) on HTTPS answers; 0: none [0].")] = None,
    pause_limit: Annotated[str | None, typer.Option(
        help="Replace a container paused this long (default: never).")] = None,
    rebalance: Annotated[bool | None, typer.Option(
        "--rebalance/--no-rebalance", help="Let agents move instances to spread the service evenly [on].")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the rollout until all are updated and healthy.")] = False,
    wait_timeout: Annotated[float, typer.Option("--timeout", help="Seconds for --wait.")] = 60.0,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the written spec as JSON (a list for a file of several); --wait progress as "
                       "JSON lines on stderr.")] = False,
) -> None:
    """Create or update a service.  Flags given are merged onto the existing spec.

    Examples:

      daprdockr svc set web.myapp --image nginx:alpine --instances 3 --http-host web.example.com --http-port 80

      daprdockr svc set web.myapp --instances 5          # scale, keep everything else

      daprdockr svc set -f web.yaml --wait

      daprdockr svc set web.myapp --health-http /healthz --health-port 80 --update-parallel 2 --wait

      daprdockr svc set web.myapp --https redirect --hsts 31536000
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
            "health": health_flags(
                http=health_http, port=health_port, tcp=health_tcp, cmd=health_cmd, docker=health_docker,
                none=no_health, interval=health_interval, timeout=health_timeout, retries=health_retries,
                start_period=health_start_period, restart_unhealthy_after=restart_unhealthy_after),
            "update": update_flags(parallel=update_parallel, order=update_order, min_healthy=update_min_healthy,
                                   deadline=update_deadline, on_failure=update_on_failure),
            "stop_signal": stop_signal, "stop_timeout": stop_timeout, "pause_limit": pause_limit,
            "rebalance": rebalance, "https": https,
            "hsts": 0 if hsts is None and https == "off" else hsts,  # (off drops the HSTS header too)
            "proxy": {k: v for k, v in (("balancer", proxy_balancer), ("connect_timeout", proxy_connect_timeout),
                                        ("read_timeout", proxy_read_timeout)) if v is not None} or None,
            "user": user, "workdir": workdir, "entrypoint": list(entrypoint) if entrypoint else None,
            "hostname": hostname, "memory": memory, "cpus": cpus, "cpu_shares": cpu_shares,
            "pids_limit": pids_limit, "volumes": list(volume) if volume else None, "network": network,
        }
        docs = _load_files(file) if file else [{}]
        cli_name = ServiceName.parse(name, field="service name") if name else None
        if len(docs) > 1 and (cli_name or any(v is not None for v in flags.values())):
            raise ValidationError("a file with several specs cannot be combined with a name or flags")
    except ValidationError as exc:
        raise fail(exc) from None

    # A file holds whole specs (replaced, not merged): all are validated before anything is written.
    try:
        whole = [ServiceSpec.from_dict(merge_flags(doc, flags), name=cli_name) for doc in docs] if file else []
        if not file and cli_name is None:
            raise ValidationError("give the service name (<service>.<group>) or a 'name' in the file")
    except ValidationError as exc:
        raise fail(exc) from None

    async def apply(store: EtcdStore) -> list[ServiceSpec]:
        specs, versions = list(whole), VersionStore(store)
        for spec in whole:
            await versions.put_service(spec)
        if cli_name is not None and not file:  # merge: one transaction on the key, retried on conflict
            specs.append(await versions.update_service(
                cli_name, lambda cur, bad: merge_onto(cli_name, cur, bad, flags)))
        if as_json:
            print_json(specs[0].to_dict() if len(specs) == 1 else [s.to_dict() for s in specs])
            sys.stdout.flush()
        else:
            for spec in specs:
                print(f"{spec.name}: {spec.instances} instance(s) of {spec.image}", file=sys.stderr)
        if wait:
            for spec in specs:
                await wait_ready(store, spec, limit=wait_timeout, quiet=False, as_json=as_json)
        return specs

    with_store(ctx, apply)


@svc_app.command("get")
def svc_get(ctx: typer.Context, name: Annotated[str, typer.Argument(help="<service>.<group>")]) -> None:
    """Print a service spec as JSON.   Example: daprdockr svc get web.myapp"""
    target = service_name(name)

    async def get(store: EtcdStore) -> ServiceSpec:
        spec = await VersionStore(store).get_service(target)
        if spec is None:
            raise NotFoundError(f"service {target} not found")
        return spec

    print_json(with_store(ctx, get).to_dict())


@svc_app.command("del")
def svc_del(ctx: typer.Context, name: Annotated[str, typer.Argument(help="<service>.<group>")]) -> None:
    """Delete a service; agents stop its instances.   Example: daprdockr svc del web.myapp"""
    target = service_name(name)

    async def delete(store: EtcdStore) -> None:
        if not await VersionStore(store).delete_service(target):
            raise NotFoundError(f"service {target} not found")

    with_store(ctx, delete)
    print(f"{target} deleted", file=sys.stderr)


SERVICE_COLUMNS = ["service", "status", "image", "desired", "running", "failed", "paused", "http_host", "invalid"]


@svc_app.command("ls")
def svc_ls(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    api: ApiOption = None, from_etcd: FromEtcdOption = False,
) -> None:
    """List services: desired vs running.   Example: daprdockr svc ls --json"""
    rows = with_store(ctx, lambda s: cluster_rows(s, api=api, from_etcd=from_etcd)).services
    if as_json:
        print_json(rows)
    else:
        print_table(rows, SERVICE_COLUMNS)

