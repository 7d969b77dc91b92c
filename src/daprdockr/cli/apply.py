"""``daprdockr apply -f FILE|DIR`` (``--dry-run``, ``--prune --group G``, ``--wait``), its alias
``plan``, and ``export``: whole directories of specs as the source of truth.

Every document is validated before anything is written; the plan (:mod:`daprdockr.core.apply_plan`)
is read at one revision, and each service's change is written in a transaction of its own that
holds only if the service's key did not move since (:mod:`daprdockr.adapters.apply_store`).
Exit codes: ``apply`` 0 when everything was written, 1 when a service's write was refused;
``plan`` / ``--dry-run`` 0 when nothing would change, 2 when something would (as ``nomad job plan``),
and never 2 for an error: a bad file or option exits 1 there (as ``terraform plan
-detailed-exitcode``), so a CI gate cannot take a broken spec for pending changes.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from daprdockr.adapters.apply_store import ApplyStore
from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.cli.app import app, fail, with_store
from daprdockr.cli.progress import wait_all
from daprdockr.clikit.output import EXIT_ERROR, EXIT_INVALID, EXIT_OK, error_line, print_json, safe_text
from daprdockr.clikit.specfile import dump_specs, load_spec_docs, validate_docs
from daprdockr.core.apply_plan import Change, plan_apply, summary
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import validate_label
from daprdockr.errors import ValidationError

EXIT_CHANGES = 2  # plan / --dry-run: something would change

Hook = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ApplyResult:
    changes: list[Change]
    written: list[Change] = field(default_factory=list)
    refused: list[Change] = field(default_factory=list)


async def apply_specs(
    store: EtcdStore, specs: Sequence[ServiceSpec], *, prune_group: str | None = None, dry_run: bool = False,
    before_write: Hook | None = None,
) -> ApplyResult:
    """Plan ``specs`` against the stored specs and (unless ``dry_run``) write each change, guarded
    by the revision the plan read.  ``before_write`` runs between the plan and the first write."""
    apply_store = ApplyStore(store)
    stored, _ = await apply_store.stored()
    changes = plan_apply(specs, stored, prune_group=prune_group)
    if dry_run:
        return ApplyResult(changes=changes)
    if before_write is not None:
        await before_write()
    result = ApplyResult(changes=changes)
    for change in changes:
        if change.writes:
            (result.written if await apply_store.write(change) else result.refused).append(change)
    return result


async def run_apply(
    store: EtcdStore, specs: Sequence[ServiceSpec], *, prune_group: str | None, dry_run: bool,
    wait: bool = False, wait_timeout: float = 60.0, as_json: bool = False, before_write: Hook | None = None,
) -> int:
    """What the command does: apply, print the changes (stdout) and refusals (stderr), follow the
    written services with ``wait``; returns the exit code."""
    result = await apply_specs(store, specs, prune_group=prune_group, dry_run=dry_run, before_write=before_write)
    refused = {c.name for c in result.refused}
    if as_json:
        print_json({"dry_run": dry_run, "changes": [c.to_dict() for c in result.changes],
                    "refused": sorted(str(n) for n in refused)})
    else:
        for change in result.changes:
            if change.name not in refused:
                print(safe_text(change.line()))
        print(f"{'plan' if dry_run else 'applied'}: {summary(c for c in result.changes if c.name not in refused)}"
              + (" (dry run: nothing written)" if dry_run else ""))
    sys.stdout.flush()
    for change in result.refused:
        error_line(f"{change.name}: changed by someone else since the plan was read (its key is no longer at "
                   f"revision {change.revision}); nothing of it was written: apply again to see the new plan")
    if dry_run:
        return EXIT_CHANGES if any(c.writes for c in result.changes) else EXIT_OK
    if wait:  # (every written service at once, through one informer, within one --timeout)
        await wait_all(store, [c.desired for c in result.written if c.desired is not None], limit=wait_timeout,
                       quiet=False, as_json=as_json)
    return EXIT_ERROR if result.refused else EXIT_OK


class PlanExitCodes(TyperCommand):
    """``plan`` and ``apply --dry-run``: a usage error (an unknown option...) exits 1, not 2."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        dry_run = self.name == "plan" or "--dry-run" in args
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except Exception as exc:
            if dry_run and getattr(exc, "exit_code", None) == EXIT_INVALID:
                exc.exit_code = EXIT_ERROR  # type: ignore[attr-defined]
            raise


def _command(ctx: typer.Context, *, files: list[str], dry_run: bool, prune: bool, group: str | None, wait: bool,
             wait_timeout: float, as_json: bool) -> None:
    try:
        code = _checked_run(ctx, files=files, dry_run=dry_run, prune=prune, group=group, wait=wait,
                            wait_timeout=wait_timeout, as_json=as_json)
    except typer.Exit as exc:
        if dry_run and exc.exit_code == EXIT_INVALID:  # (a plan's 2 says "changes")
            raise typer.Exit(EXIT_ERROR) from None
        raise
    raise typer.Exit(code)


def _checked_run(ctx: typer.Context, *, files: list[str], dry_run: bool, prune: bool, group: str | None, wait: bool,
                 wait_timeout: float, as_json: bool) -> int:
    try:
        if prune and group is None:
            raise ValidationError("needs --group G: only the services of that group are deleted", field="--prune")
        if group is not None and not prune:
            raise ValidationError("names the group --prune deletes from; give --prune too", field="--group")
        if group is not None:
            validate_label(group, field="--group")
        if dry_run and wait:
            raise ValidationError("nothing is written with --dry-run: nothing to wait for", field="--wait")
        specs = validate_docs(load_spec_docs(files))
    except ValidationError as exc:
        raise fail(exc) from None
    return with_store(ctx, lambda store: run_apply(store, specs, prune_group=group, dry_run=dry_run, wait=wait,
                                                    wait_timeout=wait_timeout, as_json=as_json))


FilesOpt = Annotated[list[str], typer.Option(
    "-f", "--file", help="Spec file or directory (its *.yaml, *.yml, *.json), - for stdin; repeatable.")]
PruneOpt = Annotated[bool, typer.Option(help="Delete the services of --group that no file names.")]
GroupOpt = Annotated[str | None, typer.Option(help="The group --prune deletes from.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the changes as JSON.")]


@app.command("apply", cls=PlanExitCodes)
def apply_cmd(
    ctx: typer.Context,
    files: FilesOpt,
    dry_run: Annotated[bool, typer.Option(
        help="Print what would change, write nothing (exit 2 if anything would, 1 on error).")] = False,
    prune: PruneOpt = False,
    group: GroupOpt = None,
    wait: Annotated[bool, typer.Option(help="Follow every changed service until it runs updated and healthy.")]
    = False,
    wait_timeout: Annotated[float, typer.Option(
        "--timeout", help="Seconds for --wait (all services together).")] = 60.0,
    as_json: JsonOpt = False,
) -> None:
    """Make the services what the files say: each document one spec with its name.  Everything is
    validated first; each service is written atomically, only if nobody changed it since the plan.

    Examples:

      daprdockr apply -f services/ --dry-run

      daprdockr apply -f services/ --prune --group myapp --wait

      daprdockr export --group myapp | daprdockr apply -f - --dry-run
    """
    _command(ctx, files=files, dry_run=dry_run, prune=prune, group=group, wait=wait, wait_timeout=wait_timeout,
             as_json=as_json)


@app.command("plan", cls=PlanExitCodes)
def plan_cmd(ctx: typer.Context, files: FilesOpt, prune: PruneOpt = False, group: GroupOpt = None,
             as_json: JsonOpt = False) -> None:
    """apply --dry-run: print what applying the files would change; exit 0 if nothing, 2 if anything, 1 on error.

    Example: daprdockr plan -f services/ --prune --group myapp
    """
    _command(ctx, files=files, dry_run=True, prune=prune, group=group, wait=False, wait_timeout=0.0,
             as_json=as_json)


@app.command("export")
def export_cmd(
    ctx: typer.Context,
    group: Annotated[str | None, typer.Option(help="Only this group's services.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="yaml (multi-document) or json (a list).")] = "yaml",
) -> None:
    """Print the stored specs as apply -f reads them.   Example: daprdockr export --group myapp > myapp.yaml"""
    try:
        if group is not None:
            validate_label(group, field="--group")
        if fmt not in ("yaml", "json"):
            raise ValidationError(f"{fmt!r} is not yaml or json", field="--format")
    except ValidationError as exc:
        raise fail(exc) from None
    stored, _ = with_store(ctx, lambda store: ApplyStore(store).stored(group=group))
    specs = [s.spec for _, s in sorted(stored.items()) if s.spec is not None]
    sys.stdout.write(dump_specs(specs, fmt=fmt))
    sys.stdout.flush()
    invalid = sorted((name, s.problem) for name, s in stored.items() if s.spec is None)
    for name, problem in invalid:
        error_line(f"{name} left out: its stored spec is invalid: {problem}")
    if invalid:
        raise typer.Exit(EXIT_ERROR)
