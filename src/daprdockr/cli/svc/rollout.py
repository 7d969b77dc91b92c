"""``daprdockr svc history / rollback / status / resume``.

History and rollback read and write the spec history in etcd (the last 10 versions,
:mod:`daprdockr.core.rollout`); a rollback writes an old version as a new one, so it rolls out
like any change and is itself in the history.  ``status`` shows the rollout of the newest change
and where each instance stands.

Every command takes ``--json`` (its result on stdout; ``--wait`` progress as JSON lines on
stderr); text from etcd is printed with its control characters escaped.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.cli.app import service_name, svc_app, with_store
from daprdockr.cli.progress import wait_ready
from daprdockr.clikit.output import print_json, print_table, safe_text
from daprdockr.core.model import ServiceSpec
from daprdockr.core.rollout import HistoryEntry
from daprdockr.core.status import instance_rows, rollout_row
from daprdockr.errors import NotFoundError


def _history_rows(entries: list[HistoryEntry], current: ServiceSpec | None) -> list[dict[str, Any]]:
    """Oldest first; ``current``: the newest version, when it is what is stored now."""
    rows = []
    for e in entries:
        spec = e.spec
        rows.append({
            "version": e.version,
            "current": e is entries[-1] and current is not None and dict(spec) == current.to_dict(),
            "at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at)) if e.at else "-",
            "cause": e.cause, "image": spec.get("image", ""), "instances": spec.get("instances", 0),
            "spec": spec,
        })
    return rows


@svc_app.command("history")
def svc_history(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="<service>.<group>")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON output (with the whole specs).")] = False,
) -> None:
    """The kept versions of a service's spec (the last 10), oldest first.

    Example: daprdockr svc history web.myapp
    """
    target = service_name(name)

    async def read(store: EtcdStore) -> list[dict[str, Any]]:
        versions = VersionStore(store)
        entries = await versions.history(target)
        if not entries:
            raise NotFoundError(f"{target} has no history")
        return _history_rows(entries, await versions.get_service(target))

    rows = with_store(ctx, read)
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["version", "current", "at", "cause", "image", "instances"])


@svc_app.command("rollback")
def svc_rollback(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="<service>.<group>")],
    to: Annotated[int | None, typer.Option("--to", help="Version to go back to [default: the one before].")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the rollout until it is done.")] = False,
    wait_timeout: Annotated[float, typer.Option("--timeout", help="Seconds for --wait.")] = 120.0,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the version taken and the spec written as JSON; --wait progress as JSON lines.")] = False,
) -> None:
    """Write an earlier version of the spec as the newest one (it rolls out like any change).

    Example: daprdockr svc rollback web.myapp --to 3 --wait
    """
    target = service_name(name)
    if to is not None and to < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--to")

    async def back(store: EtcdStore) -> None:
        spec, source = await VersionStore(store).rollback(target, to=to)
        if as_json:
            print_json({"service": str(target), "to_version": source, "spec": spec.to_dict()})
            sys.stdout.flush()
        else:
            print(f"{target}: rolled back to version {source} ({spec.image}, {spec.instances} instance(s))",
                  file=sys.stderr)
        if wait:
            await wait_ready(store, spec, limit=wait_timeout, quiet=False, as_json=as_json)

    with_store(ctx, back)


@svc_app.command("status")
def svc_status(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="<service>.<group>")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rollout state of a service (rolling, complete, paused, rolled-back) and its instances.

    Example: daprdockr svc status web.myapp
    """
    target = service_name(name)
    state = with_store(ctx, lambda s: s.snapshot_of(target))
    row = rollout_row(state, target)
    instances = instance_rows(state, now=time.time(), service=target)
    if as_json:
        print_json({**row, "instances": instances})
        return
    if row.get("status") in ("absent", "invalid"):
        print_json(row)
        raise typer.Exit(3)
    summary = {k: v for k, v in row.items() if k not in ("update", "health", "failed", "replacing")}
    summary["replacing"] = ", ".join(row["replacing"]) or "-"
    print_table([summary], ["service", "rollout", "version", "desired", "updated", "healthy", "outdated",
                            "replacing", "reason"])
    for failure in row["failed"]:
        print(f"failed: {safe_text(failure)}", file=sys.stderr)
    print_table(instances, ["instance", "node", "state", "health", "age", "container_id", "error"])


@svc_app.command("resume")
def svc_resume(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="<service>.<group>")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Resume a paused rollout.   Example: daprdockr svc resume web.myapp"""
    target = service_name(name)
    with_store(ctx, lambda s: VersionStore(s).resume(target))
    if as_json:
        print_json({"service": str(target), "rollout": "rolling"})
    else:
        print(f"{target}: rollout resumed", file=sys.stderr)
