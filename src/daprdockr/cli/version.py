"""``daprdockr version`` (and ``daprdockr --version``): this package's version and where it is
installed, and the versions of etcd, Docker and nginx found here (best effort, each probe
time-limited; "not found" with the reason otherwise)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from daprdockr.adapters.version_probe import PROBE_TIMEOUT
from daprdockr.cli.app import Globals, app, store_of
from daprdockr.clikit.output import print_json
from daprdockr.clikit.versions import as_json, collect, render


def show_versions(g: Globals, *, json_out: bool = False, timeout: float = PROBE_TIMEOUT) -> None:
    """Print the report; the etcd server behind ``--etcd`` is asked first (within ``timeout``)."""
    store = store_of(Globals(etcd=g.etcd, prefix=g.prefix, timeout=min(g.timeout, timeout), security=g.security))
    components = asyncio.run(collect(store=store, limit=timeout))
    if json_out:
        print_json(as_json(components))
    else:
        print(render(components))


@app.command()
def version(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
    timeout: Annotated[float, typer.Option("--probe-timeout", help="Seconds per probe.")] = PROBE_TIMEOUT,
) -> None:
    """This package's version and the etcd, Docker and nginx versions found.   Example: daprdockr version"""
    obj = ctx.find_root().obj
    assert isinstance(obj, Globals)
    show_versions(obj, json_out=json_out, timeout=timeout)
