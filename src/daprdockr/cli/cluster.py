"""Cluster views: ``status``, ``nodes``, ``ps`` (``-w``), ``watch`` (the informer), ``logs`` (an agent's API)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from daprdockr.adapters.etcd_maintenance import EtcdMaintenance
from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.informer import Informer
from daprdockr.cli.app import ApiOption, FromEtcdOption, app, fail, service_name, with_store
from daprdockr.cli.svc.spec import SERVICE_COLUMNS
from daprdockr.clikit.cluster_rows import ClusterRows, cluster_rows
from daprdockr.clikit.output import make_table, print_json, print_table
from daprdockr.core.etcd_health import EtcdHealth, alarm_names, compactor_of, parse_bytes
from daprdockr.core.names import ServiceName
from daprdockr.core.records import NodeRecord
from daprdockr.core.state import ClusterState
from daprdockr.core.status import instance_rows
from daprdockr.errors import DaprDockrError, NotFoundError, ValidationError


async def etcd_health(store: EtcdStore, nodes: Mapping[str, NodeRecord], *, quota: int) -> EtcdHealth:
    """etcd's database size and alarms, and the node that compacts (a failure to read them is shown, not fatal)."""
    m = EtcdMaintenance(store)
    try:
        status, alarms = await m.status(), alarm_names(await m.alarms())
    except DaprDockrError as exc:
        return EtcdHealth(quota=quota, error=str(exc), interval=0)
    return EtcdHealth(db_size=status.db_size, db_size_in_use=status.db_size_in_use, quota=quota, alarms=alarms,
                      revision=status.revision, polled=True, compactor=compactor_of(nodes), interval=0)


@app.command()
def status(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False,
    etcd_quota_bytes: Annotated[str, typer.Option(
        envvar="DAPRDOCKR_ETCD_QUOTA_BYTES",
        help="etcd's --quota-backend-bytes (etcd's API does not tell it), to show the database size against.")
    ] = "2GiB",
    api: ApiOption = None,
    from_etcd: FromEtcdOption = False,
) -> None:
    """Cluster summary: live nodes, services desired vs running, etcd's space and alarms.

    Example: daprdockr status
    """
    try:
        quota = parse_bytes(etcd_quota_bytes)
    except ValidationError as exc:
        raise fail(exc) from None

    async def read(store: EtcdStore) -> tuple[ClusterRows, EtcdHealth]:
        rows = await cluster_rows(store, api=api, from_etcd=from_etcd)
        return rows, await etcd_health(store, rows.node_records, quota=quota)

    rows, etcd = with_store(ctx, read)
    node_list, services = rows.nodes, rows.services
    if as_json:
        print_json({"nodes": node_list, "services": services, "revision": rows.revision,
                    "skipped_keys": rows.skipped_keys, "etcd": etcd.to_dict(), "source": rows.source})
        return
    print_table(node_list, ["node", "state", "address", "instances", "capacity", "up"], title="nodes")
    print_table(services, SERVICE_COLUMNS, title="services")
    print(f"etcd: {'ALARM ' + ','.join(etcd.alarms) + ': ' if etcd.alarms else ''}{etcd.summary()}")
    if etcd.polled:
        print(f"etcd compaction: {'by ' + etcd.compactor if etcd.compactor else 'no live agent'}")
    print(f"read from {rows.source}, revision {rows.revision}")


@app.command()
def nodes(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False, api: ApiOption = None,
    from_etcd: FromEtcdOption = False,
) -> None:
    """Live nodes (agents) with their instance counts.   Example: daprdockr nodes"""
    rows = with_store(ctx, lambda s: cluster_rows(s, api=api, from_etcd=from_etcd)).nodes
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["node", "state", "address", "instances", "capacity", "up", "dns", "http", "api", "runtime"])


def _ps_rows(state: ClusterState, name: ServiceName | None) -> list[dict[str, Any]]:
    return instance_rows(state, now=time.time(), service=name)


PS_COLUMNS = ["service", "instance", "node", "address", "ports", "state", "health", "age", "container_id", "error"]


@app.command()
def ps(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Only this service.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow changes (etcd watch).")] = False,
) -> None:
    """Instances: number, node, address, ports, state, age, container.   Example: daprdockr ps web.myapp -w"""
    target = service_name(name) if name else None
    if watch:
        _watch(ctx, target, as_json=as_json)
        return
    rows = _ps_rows(with_store(ctx, lambda s: s.snapshot() if target is None else s.snapshot_of(target)), target)
    if as_json:
        print_json(rows)
    else:
        print_table(rows, PS_COLUMNS)


def _watch(ctx: typer.Context, target: ServiceName | None, *, as_json: bool) -> None:
    """Re-render on every etcd watch event (not polling)."""

    async def follow(store: EtcdStore) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console()
        live = Live(console=console, auto_refresh=False) if console.is_terminal and not as_json else None
        informer = Informer(store=store)
        shown: list[dict[str, Any]] | None = None
        if live is not None:
            live.start()
        try:
            async for state in informer.states():
                rows = _ps_rows(state, target)
                if rows == shown:
                    continue  # something else changed (another service, a node record)
                shown = rows
                if as_json:
                    print(json.dumps({"revision": informer.revision, "instances": rows}), flush=True)
                elif live is not None:
                    live.update(make_table(rows, PS_COLUMNS), refresh=True)
                else:
                    print(f"--- revision {informer.revision}", flush=True)
                    print_table(rows, PS_COLUMNS)
        finally:
            if live is not None:
                live.stop()

    with_store(ctx, follow)


@app.command("watch")
def watch_cmd(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Only this service.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per change.")] = False,
) -> None:
    """Live view of instances, driven by the etcd watch.   Example: daprdockr watch --json"""
    _watch(ctx, service_name(name) if name else None, as_json=as_json)


@app.command()
def logs(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="<service>.<group>")],
    instance: Annotated[int | None, typer.Option(
        "-n", "--instance", help="Instance number [default: every instance, merged, each line prefixed [n]].")] = None,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Stream new lines.")] = False,
    tail: Annotated[int, typer.Option(help="Lines from the end (of each instance).")] = 100,
    api_token_file: Annotated[Path | None, typer.Option(
        envvar="DAPRDOCKR_API_TOKEN_FILE",
        help="File with the agent API token [default: the agent's <state dir>/api-token when readable].")] = None,
) -> None:
    """Container logs of an instance, fetched from the agent that runs it; without -n, every
    instance's lines merged as they arrive (from an agent on this host, else the one running the
    lowest instance).

    Examples: daprdockr logs web.myapp -n 2 -f ; daprdockr logs web.myapp -f
    """
    target = service_name(name)

    async def fetch(store: EtcdStore) -> None:
        from daprdockr.clikit.cluster_rows import local_agents
        from daprdockr.clikit.logs import client_token, stream_logs

        state = await store.snapshot_of(target)
        records = state.instances_of(target)
        if instance is not None:
            rec = state.instances.get((target, instance))
            if rec is None:
                raise NotFoundError(f"instance {instance} of {target} not found")
        elif not records:
            raise NotFoundError(f"{target} has no instances")
        else:
            rec = records[0]
        node = state.nodes.get(rec.node)
        apis = local_agents(state.nodes) if instance is None else []
        api = apis[0] if apis else node.api if node is not None else ""
        if not api:
            raise DaprDockrError(f"node {rec.node} runs instance {rec.number} but publishes no API address")
        token = client_token(api_token_file, api=api)
        await stream_logs(api=api, service=target, number=instance, tail=tail, follow=follow, token=token)

    with_store(ctx, fetch)
