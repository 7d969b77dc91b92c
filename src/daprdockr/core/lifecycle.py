"""The lifecycle parts of a service spec: health check, update policy, stop signal.  Pure.

* :class:`HealthCheck` — ``{"http": "/path", "port": 8080}``, ``{"tcp": 8080}`` or ``{"cmd": [...]}``
  (run in the container), each with ``interval``, ``timeout``, ``retries`` (consecutive failures
  that make an instance unhealthy), ``start_period`` (failures before it do not count) and
  ``restart_unhealthy_after`` (restart a container unhealthy for that long; 0: never); or the
  string ``"docker"``: the image's own HEALTHCHECK status.
* :class:`UpdatePolicy` — how a change of what the containers are made of rolls out:
  ``parallel`` replacements at once across the cluster, ``order`` ``start-first`` (a replacement
  starts beside the old container and takes over once healthy) or ``stop-first``,
  ``min_healthy`` (how long a replacement must stay healthy), ``deadline`` (for it to get
  there), ``on_failure`` ``rollback`` or ``pause``.
* ``stop_signal`` / ``stop_timeout`` — how a container is asked to stop and how long it gets.

Durations are seconds as numbers, or strings like ``"500ms"``, ``"10s"``, ``"2m"``, ``"1h"``.
Everything is validated strictly (unknown keys refused), with errors naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from daprdockr.core.names import validate_port
from daprdockr.errors import ValidationError

HealthKind = Literal["http", "tcp", "cmd", "docker"]
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGKILL", "SIGWINCH")
_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")


def parse_duration(value: object, *, field: str, maximum: float = 86_400.0) -> float:
    """Seconds from ``5``, ``2.5``, ``"500ms"``, ``"10s"``, ``"2m"`` or ``"1h"``."""
    if isinstance(value, bool):
        raise ValidationError(f"{value!r} is not a duration", field=field)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value.strip())):
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    else:
        raise ValidationError(f"{value!r} is not a duration (seconds, or like 500ms, 10s, 2m)", field=field)
    if not 0 <= seconds <= maximum:
        raise ValidationError(f"{value!r} is outside 0..{maximum:g} seconds", field=field)
    return seconds


def _fmt(seconds: float) -> str:
    return f"{seconds:g}s"


def _reject_unknown(data: Mapping[str, Any], allowed: set[str], *, what: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValidationError(
            f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(allowed))}", field=what)


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheck:
    kind: HealthKind
    path: str = "/"
    port: int = 0
    cmd: tuple[str, ...] = ()
    interval: float = 5.0
    timeout: float = 2.0
    retries: int = 3
    start_period: float = 0.0
    restart_unhealthy_after: float = 0.0  # 0: never restart for being unhealthy

    TIMING = ("interval", "timeout", "retries", "start_period", "restart_unhealthy_after")

    @classmethod
    def parse(cls, value: object) -> HealthCheck:
        if value == "docker":
            return cls(kind="docker")
        if not isinstance(value, Mapping):
            raise ValidationError('must be {"http": "/path", "port": P}, {"tcp": P}, {"cmd": [...]} or "docker"',
                                  field="health")
        kinds = [k for k in ("http", "tcp", "cmd", "docker") if k in value]
        if len(kinds) != 1:
            raise ValidationError("give exactly one of http, tcp, cmd, docker", field="health")
        kind: HealthKind = kinds[0]  # type: ignore[assignment]
        allowed = {kind, *cls.TIMING} | ({"port"} if kind == "http" else set())
        _reject_unknown(value, allowed, what="health")
        timing: dict[str, Any] = {}
        for key in ("interval", "timeout", "start_period", "restart_unhealthy_after"):
            if key in value:
                timing[key] = parse_duration(value[key], field=f"health.{key}")
        if "retries" in value:
            retries = value["retries"]
            if isinstance(retries, bool) or not isinstance(retries, int) or not 1 <= retries <= 100:
                raise ValidationError(f"{retries!r} must be an integer 1..100", field="health.retries")
            timing["retries"] = retries
        if timing.get("interval", 5.0) < 0.1 or timing.get("timeout", 2.0) < 0.05:
            raise ValidationError("interval must be >= 100ms and timeout >= 50ms", field="health")
        if kind == "http":
            path = value["http"]
            if not isinstance(path, str) or not _PATH.fullmatch(path) or len(path) > 1024:
                raise ValidationError(f"{path!r} is not an absolute URL path", field="health.http")
            port = validate_port(value.get("port"), field="health.port")
            return cls(kind="http", path=path, port=port, **timing)
        if kind == "tcp":
            return cls(kind="tcp", port=validate_port(value["tcp"], field="health.tcp"), **timing)
        if kind == "cmd":
            cmd = value["cmd"]
            if (not isinstance(cmd, list) or not cmd or len(cmd) > 64
                    or not all(isinstance(a, str) and "\x00" not in a and len(a) <= 4096 for a in cmd)):
                raise ValidationError("must be a non-empty list of strings", field="health.cmd")
            return cls(kind="cmd", cmd=tuple(cmd), **timing)
        if value["docker"] is not True:
            raise ValidationError('give "docker": true (or just "docker")', field="health.docker")
        return cls(kind="docker", **timing)

    def to_dict(self) -> dict[str, Any] | str:
        timing: dict[str, Any] = {"interval": _fmt(self.interval), "timeout": _fmt(self.timeout),
                                  "retries": self.retries, "start_period": _fmt(self.start_period)}
        if self.restart_unhealthy_after:
            timing["restart_unhealthy_after"] = _fmt(self.restart_unhealthy_after)
        if self.kind == "http":
            return {"http": self.path, "port": self.port, **timing}
        if self.kind == "tcp":
            return {"tcp": self.port, **timing}
        if self.kind == "cmd":
            return {"cmd": list(self.cmd), **timing}
        return {"docker": True, **timing}


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdatePolicy:
    parallel: int = 1
    order: Literal["start-first", "stop-first"] = "start-first"
    min_healthy: float = 10.0
    deadline: float = 60.0
    on_failure: Literal["rollback", "pause"] = "rollback"

    FIELDS = frozenset({"parallel", "order", "min_healthy", "deadline", "on_failure"})

    @classmethod
    def parse(cls, value: object) -> UpdatePolicy:
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise ValidationError("must be an object", field="update")
        _reject_unknown(value, set(cls.FIELDS), what="update")
        parallel = value.get("parallel", 1)
        if isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= 100:
            raise ValidationError(f"{parallel!r} must be an integer 1..100", field="update.parallel")
        order = value.get("order", "start-first")
        if order not in ("start-first", "stop-first"):
            raise ValidationError(f"{order!r} is not start-first or stop-first", field="update.order")
        on_failure = value.get("on_failure", "rollback")
        if on_failure not in ("rollback", "pause"):
            raise ValidationError(f"{on_failure!r} is not rollback or pause", field="update.on_failure")
        min_healthy = parse_duration(value.get("min_healthy", 10.0), field="update.min_healthy")
        deadline = parse_duration(value.get("deadline", 60.0), field="update.deadline")
        if deadline <= min_healthy:
            raise ValidationError("deadline must be longer than min_healthy", field="update.deadline")
        return cls(parallel=parallel, order=order, min_healthy=min_healthy, deadline=deadline, on_failure=on_failure)

    def to_dict(self) -> dict[str, Any]:
        return {"parallel": self.parallel, "order": self.order, "min_healthy": _fmt(self.min_healthy),
                "deadline": _fmt(self.deadline), "on_failure": self.on_failure}


def parse_stop_signal(value: object) -> str | None:
    if value in (None, ""):
        return None
    text = str(value).upper() if isinstance(value, str) else value
    if isinstance(text, str) and not text.startswith("SIG"):
        text = "SIG" + text
    if text not in SIGNALS:
        raise ValidationError(f"{value!r} is not one of {', '.join(SIGNALS)}", field="stop_signal")
    return text
