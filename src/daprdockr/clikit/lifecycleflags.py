"""``svc set`` flags for health checks, update policy and stop grace, as spec fields.  Pure.

The flags become partial ``health``/``update`` mappings that :func:`merge_lifecycle` lays over the
stored spec's: ``--update-parallel 2`` keeps the rest of the policy, a new check kind
(``--health-http``, ``--health-tcp``, ``--health-cmd``, ``--health-docker``) replaces the old
kind but keeps its timing unless new timing is given, and ``--no-health`` drops the check.
Validation is the spec's own (:mod:`daprdockr.core.lifecycle`), so errors name the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from daprdockr.errors import ValidationError

KINDS = ("http", "tcp", "cmd", "docker")


def health_flags(
    *, http: str | None = None, port: int | None = None, tcp: int | None = None, cmd: str | None = None,
    docker: bool = False, none: bool = False, interval: str | None = None, timeout: str | None = None,
    retries: int | None = None, start_period: str | None = None, restart_unhealthy_after: str | None = None,
) -> dict[str, Any] | str | None:
    """The ``health`` flag value: a partial mapping, ``""`` (``--no-health``) or None (no flag)."""
    kinds = [k for k, v in (("http", http), ("tcp", tcp), ("cmd", cmd), ("docker", docker or None)) if v is not None]
    if len(kinds) > 1:
        raise ValidationError("give one of --health-http, --health-tcp, --health-cmd, --health-docker", field="health")
    timing = {k: v for k, v in (("interval", interval), ("timeout", timeout), ("retries", retries),
                                ("start_period", start_period),
                                ("restart_unhealthy_after", restart_unhealthy_after)) if v is not None}
    if none:
        if kinds or timing or port is not None:
            raise ValidationError("--no-health cannot be combined with other --health flags", field="health")
        return ""
    out: dict[str, Any] = dict(timing)
    if http is not None:
        out["http"] = http
    if tcp is not None:
        out["tcp"] = tcp
    if docker:
        out["docker"] = True
    if cmd is not None:
        out["cmd"] = _command(cmd)
    if port is not None:
        out["port"] = port
    return out or None


def _command(text: str) -> list[str]:
    """``'["curl","-f","localhost"]'`` (JSON list) or a shell line (run with ``sh -c``)."""
    if text.lstrip().startswith("["):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ValidationError(f"not a JSON list: {exc}", field="health.cmd") from None
        if not isinstance(value, list):
            raise ValidationError("must be a JSON list of strings", field="health.cmd")
        return value
    return ["sh", "-c", text]


def update_flags(*, parallel: int | None = None, order: str | None = None, min_healthy: str | None = None,
                 deadline: str | None = None, on_failure: str | None = None) -> dict[str, Any] | None:
    out = {k: v for k, v in (("parallel", parallel), ("order", order), ("min_healthy", min_healthy),
                             ("deadline", deadline), ("on_failure", on_failure)) if v is not None}
    return out or None


def merge_lifecycle(key: str, base: object, value: object) -> object:
    """``health``/``update`` flag ``value`` laid over the stored ``base``."""
    if not isinstance(value, Mapping):
        return value  # "" (no check)
    if key == "update":
        return {**(base if isinstance(base, Mapping) else {}), **value}
    old: dict[str, Any] = {"docker": True} if base == "docker" else dict(base) if isinstance(base, Mapping) else {}
    if any(k in value for k in KINDS):  # a new kind: the old kind (and its port) go
        old = {k: v for k, v in old.items() if k not in KINDS and k != "port"}
    elif not old or not any(k in old for k in KINDS):
        raise ValidationError("timing flags need a check: give --health-http, --health-tcp, --health-cmd or "
                              "--health-docker", field="health")
    return {**old, **value}
