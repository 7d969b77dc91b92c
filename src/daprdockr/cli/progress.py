"""``--wait`` progress, shared by ``svc set``, ``svc rollback``, ``apply`` and ``node drain``: follow
one or several rollouts through one informer and print progress lines on stderr (text with control characters
from etcd escaped, or with ``--json`` one JSON object per line)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.informer import Informer
from daprdockr.clikit.output import safe_text
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState
from daprdockr.core.status import Progress, progress
from daprdockr.errors import RolloutFailedError, WaitTimeoutError


def progress_json(name: ServiceName, p: Progress) -> str:
    """One ``--wait --json`` progress line: every field of :class:`Progress`, plus ``done``."""
    return json.dumps({"service": str(name), **asdict(p), "done": p.done}, sort_keys=True)


def progress_line(line: str, *, last: str, tty: bool) -> None:
    """Print a progress line to stderr: on a terminal over the previous one, else one per line."""
    if line != last:
        print(f"\r\x1b[K{line}" if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)


async def wait_ready(store: EtcdStore, spec: ServiceSpec, *, limit: float, quiet: bool,
                     as_json: bool = False) -> None:
    """Follow the informer until ``spec`` runs everywhere, updated and healthy, printing progress
    (replacements in flight, healthy count, failures; ``as_json``: JSON lines); raise on timeout
    naming the failures, or when the rollout was rolled back or paused."""
    await wait_all(store, [spec], limit=limit, quiet=quiet, as_json=as_json)


async def wait_all(store: EtcdStore, specs: Sequence[ServiceSpec], *, limit: float, quiet: bool,
                   as_json: bool = False) -> None:
    """:func:`wait_ready` for several services at once, through one informer and within one
    ``limit``: until each is done or halted.  Raises on timeout naming each service not ready
    (and why), else when any rollout was rolled back or paused, naming each."""
    tty = sys.stderr.isatty() and not as_json and len(specs) == 1  # (several: one line per change)
    last: dict[ServiceName, str] = {}
    now: dict[ServiceName, Progress] = {}

    def step(state: ClusterState) -> bool:
        for spec in specs:
            p = now[spec.name] = progress(state, spec)
            line = progress_json(spec.name, p) if as_json else safe_text(p.line(spec.name))
            if not quiet:
                progress_line(line, last=last.get(spec.name, ""), tty=tty)
                last[spec.name] = line
        return all(p.done or p.halted for p in now.values()) and len(now) == len(specs)

    try:
        finished = await Informer(store=store).follow(step, within=limit)
    finally:
        if tty and not quiet and last:
            print(file=sys.stderr)
    if not finished:
        late = [f"{spec.name} not ready after {limit:g}s: " + (
            "; ".join(p.failed) or p.halted or f"only {p.healthy}/{p.desired} updated and healthy"
            if (p := now.get(spec.name)) is not None else "no state read")
            for spec in specs if not (now.get(spec.name) and now[spec.name].done)]
        raise WaitTimeoutError("; ".join(late))
    halted = [f"{name}: {p.halted}" for name, p in now.items() if p.halted]
    if halted:
        raise RolloutFailedError("; ".join(halted))
