"""``--wait`` progress, shared by ``svc set``, ``svc rollback``, ``apply`` and ``node drain``: follow
a rollout through the informer and print progress lines on stderr (text with control characters
from etcd escaped, or with ``--json`` one JSON object per line)."""

from __future__ import annotations

import json
import sys
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
    tty = sys.stderr.isatty() and not as_json
    last = ""
    p = None

    def step(state: ClusterState) -> bool:
        nonlocal last, p
        p = progress(state, spec)
        line = progress_json(spec.name, p) if as_json else safe_text(p.line(spec.name))
        if not quiet:
            progress_line(line, last=last, tty=tty)
            last = line
        return p.done or bool(p.halted)

    try:
        if not await Informer(store=store).follow(step, within=limit):
            reason = ("; ".join(p.failed) or f"only {p.healthy}/{p.desired} updated and healthy") if p \
                else "no state read"
            raise WaitTimeoutError(f"{spec.name} not ready after {limit:g}s: {reason}")
    finally:
        if tty and not quiet and last:
            print(file=sys.stderr)
    if p is not None and p.halted:
        raise RolloutFailedError(f"{spec.name}: {p.halted}")
