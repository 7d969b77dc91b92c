"""``daprdockr node drain / undrain``: drain markers are plain keys the agents watch.

Every command takes ``--json`` (its result on stdout; ``--wait`` progress as JSON lines on
stderr).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.informer import Informer
from daprdockr.adapters.lifecycle_store import LifecycleStore
from daprdockr.cli.app import node_app, with_store
from daprdockr.cli.progress import progress_line
from daprdockr.clikit.output import print_json
from daprdockr.core.names import validate_label
from daprdockr.core.state import ClusterState
from daprdockr.errors import ValidationError, WaitTimeoutError


def _node(text: str) -> str:
    try:
        return validate_label(text, field="node")
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None


@node_app.command("drain")
def node_drain(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="Node id.")],
    wait: Annotated[bool, typer.Option(help="Wait until the node holds no instance.")] = False,
    wait_timeout: Annotated[float, typer.Option("--timeout", help="Seconds for --wait.")] = 300.0,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the node's state as JSON; --wait progress as JSON lines on stderr.")] = False,
) -> None:
    """The node stops claiming; each of its instances starts elsewhere and is healthy before it
    stops there.  The node must be live or hold instances.   Example: daprdockr node drain n3 --wait"""
    node_id = _node(node)

    async def drain(store: EtcdStore) -> None:
        state = await store.snapshot()
        held = state.held_by(node_id)
        await LifecycleStore(store).drain_known(node_id, on=True, state=state)
        if not as_json:
            print(f"{node_id}: draining", file=sys.stderr)
        if wait:
            held = await _wait_drained(store, node_id, limit=wait_timeout, as_json=as_json)
        if as_json:
            print_json({"node": node_id, "state": "drained" if wait else "draining", "instances": held})

    with_store(ctx, drain)


async def _wait_drained(store: EtcdStore, node_id: str, *, limit: float, as_json: bool) -> int:
    held = -1

    def step(state: ClusterState) -> bool:
        nonlocal held
        now_held = state.held_by(node_id)
        if now_held != held:
            held = now_held
            line = (json.dumps({"node": node_id, "instances": held}) if as_json
                    else f"{node_id}: {held} instance(s) left")
            progress_line(line, last="", tty=False)
        return not held

    if not await Informer(store=store).follow(step, within=limit):
        raise WaitTimeoutError(f"{node_id} still holds {held} instance(s) after {limit:g}s")
    if not as_json:
        print(f"{node_id}: drained", file=sys.stderr)
    return held


@node_app.command("undrain")
def node_undrain(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="Node id.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Let a drained node claim instances again.   Example: daprdockr node undrain n3"""
    node_id = _node(node)

    async def undrain(store: EtcdStore) -> None:
        await LifecycleStore(store).drain_known(node_id, on=False, state=await store.snapshot())

    with_store(ctx, undrain)
    if as_json:
        print_json({"node": node_id, "state": "ready"})
    else:
        print(f"{node_id}: ready", file=sys.stderr)
