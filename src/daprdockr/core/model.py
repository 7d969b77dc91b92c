"""The desired state of one service (``services/<group>/<service>``): :class:`ServiceSpec`, with
strict parsing from JSON-shaped dicts, and its published ports (:class:`PortSpec`).

Specs are frozen dataclasses.  ``from_dict`` refuses unknown fields and bad values with a
:class:`~daprdockr.errors.ValidationError` naming the field; ``to_dict`` gives canonical JSON-able
data (sorted keys where order carries no meaning) so that equal specs serialise identically.  What
etcd says of instances and nodes is in :mod:`daprdockr.core.records`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from daprdockr.core.containerspec import FIELDS as CONTAINER_FIELDS
from daprdockr.core.containerspec import ContainerOptions
from daprdockr.core.httpspolicy import HttpsPolicy
from daprdockr.core.jsondata import MAX_RECORD_BYTES, check_count, dumps, reject_unknown, require_mapping
from daprdockr.core.lifecycle import HealthCheck, UpdatePolicy, parse_duration, parse_stop_signal
from daprdockr.core.names import (
    ServiceName,
    validate_env_key,
    validate_hostname,
    validate_image,
    validate_label_key,
    validate_port,
)
from daprdockr.core.proxypolicy import ProxyPolicy
from daprdockr.errors import ValidationError

MAX_INSTANCES = 1000
# Bounds on a spec, enforced by the CLI and by every reader: one spec must never be able to
# stall an agent (all derived values are linear in these sizes and computed once per spec).
MAX_PORTS = 64
MAX_ENV = 256
MAX_LABELS = 64
MAX_CMD_ARGS = 256
MAX_STRING = 8192  # one env value, label value or argument, in characters
Protocol_ = Literal["tcp", "udp"]


@dataclass(frozen=True, order=True, slots=True)
class PortSpec:
    """A container port to publish: ``9000`` or ``"53/udp"`` in JSON."""

    port: int
    proto: Protocol_ = "tcp"

    @classmethod
    def parse(cls, value: object, *, field: str = "ports") -> PortSpec:
        if isinstance(value, str):
            text, _, proto = value.partition("/")
            proto = proto or "tcp"
            if proto not in ("tcp", "udp"):
                raise ValidationError(f"{value!r}: protocol must be tcp or udp", field=field)
            if not text.isdigit():
                raise ValidationError(f"{value!r} is not <port>[/tcp|udp]", field=field)
            return cls(port=validate_port(int(text), field=field), proto=proto)  # type: ignore[arg-type]
        return cls(port=validate_port(value, field=field))

    def __str__(self) -> str:
        return f"{self.port}/{self.proto}"


def _parse_bool(value: object, *, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{value!r} must be true or false", field=field)
    return value


def _check_string(value: str, *, field: str, what: str) -> None:
    if "\x00" in value:
        raise ValidationError(f"{what} contains a NUL byte", field=field)
    if len(value) > MAX_STRING:
        raise ValidationError(f"{what} is longer than {MAX_STRING} characters", field=field)


def _parse_str_map(
    value: object, *, field: str, key_check: Callable[..., str], limit: int
) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ValidationError("must be an object of string values", field=field)
    check_count(value, limit, field=field)
    items = []
    for k, v in value.items():
        key_check(k, field=field)
        if not isinstance(v, str):
            raise ValidationError(f"value of {k!r} must be a string", field=field)
        _check_string(v, field=field, what=f"value of {k!r}")
        items.append((k, v))
    return tuple(sorted(items))


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """Desired state of one service.

    ``cmd`` is an argument list; a shell string is only used if the user passes ``["sh", "-c",
    "..."]`` themselves.  ``http_host`` and ``http_port`` go together: the hostname nginx routes
    and the container port it routes to.
    """

    name: ServiceName
    image: str
    instances: int = 1
    cmd: tuple[str, ...] = ()
    http_host: str | None = None
    http_port: int | None = None
    env: tuple[tuple[str, str], ...] = ()
    ports: tuple[PortSpec, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    health: HealthCheck | None = None
    update: UpdatePolicy = field(default_factory=UpdatePolicy)
    stop_signal: str | None = None  # None: the image's own (Docker's default SIGTERM)
    stop_timeout: float | None = None  # None: the agent's --stop-timeout
    container: ContainerOptions = field(default_factory=ContainerOptions)  # user, limits, volumes, ...
    proxy: ProxyPolicy = field(default_factory=ProxyPolicy)  # nginx's balancer and timeouts for http_host
    https: HttpsPolicy = field(default_factory=HttpsPolicy)  # http_host over HTTP, HTTPS or both; HSTS
    pause_limit: float = 0.0  # a container paused this long is replaced (0: never)
    rebalance: bool = True  # instances move to even out the nodes (core/planning/rebalance.py)
    # derived once per spec (linear time), never part of equality
    _container_ports: tuple[PortSpec, ...] = field(init=False, repr=False, compare=False, default=())
    _runtime_hash: str = field(init=False, repr=False, compare=False, default="")

    FIELDS = frozenset(
        {"name", "image", "instances", "cmd", "http_host", "http_port", "env", "ports", "labels", "health", "update",
         "stop_signal", "stop_timeout", "proxy", "https", "hsts", "pause_limit", "rebalance"}
    ) | CONTAINER_FIELDS

    @classmethod
    def from_dict(cls, data: object, *, name: ServiceName | None = None) -> ServiceSpec:
        """Parse and validate; ``name`` (from the key or the command line) wins over the body's.

        A body ``name`` that disagrees with ``name`` is an error, not silently ignored.
        """
        d = require_mapping(data, what="service spec")
        reject_unknown(d, cls.FIELDS, what="service spec")
        if "name" in d:
            body_name = ServiceName.parse(d["name"], field="name")
            if name is not None and body_name != name:
                raise ValidationError(
                    f"spec names {body_name} but the command names {name}", field="name"
                )
            name = body_name
        if name is None:
            raise ValidationError("is required (<service>.<group>)", field="name")
        if "image" not in d:
            raise ValidationError("is required", field="image")
        image = validate_image(d["image"])
        instances = d.get("instances", 1)
        if isinstance(instances, bool) or not isinstance(instances, int):
            raise ValidationError(f"{instances!r} must be an integer", field="instances")
        if not 0 <= instances <= MAX_INSTANCES:
            raise ValidationError(f"{instances} is outside 0..{MAX_INSTANCES}", field="instances")
        cmd_raw = d.get("cmd") or []
        if isinstance(cmd_raw, str):
            raise ValidationError(
                "must be a list of arguments; for a shell string pass [\"sh\", \"-c\", \"...\"]",
                field="cmd",
            )
        if not isinstance(cmd_raw, list) or not all(isinstance(a, str) for a in cmd_raw):
            raise ValidationError("must be a list of strings", field="cmd")
        check_count(cmd_raw, MAX_CMD_ARGS, field="cmd")
        for arg in cmd_raw:
            _check_string(arg, field="cmd", what="an argument")
        http_host_raw = d.get("http_host")
        http_port_raw = d.get("http_port")
        http_host = None if http_host_raw in (None, "") else validate_hostname(http_host_raw)
        http_port = None if http_port_raw is None else validate_port(http_port_raw, field="http_port")
        if http_host is not None and http_port is None:
            raise ValidationError("is required when http_host is set", field="http_port")
        ports_raw = d.get("ports") or []
        if not isinstance(ports_raw, list):
            raise ValidationError("must be a list of ports like 8080 or \"53/udp\"", field="ports")
        check_count(ports_raw, MAX_PORTS, field="ports")
        ports = tuple(sorted({PortSpec.parse(p) for p in ports_raw}))
        spec = cls(
            name=name,
            image=image,
            instances=instances,
            cmd=tuple(cmd_raw),
            http_host=http_host,
            http_port=http_port,
            env=_parse_str_map(d.get("env"), field="env", key_check=validate_env_key, limit=MAX_ENV),
            ports=ports,
            labels=_parse_str_map(d.get("labels"), field="labels", key_check=validate_label_key, limit=MAX_LABELS),
            health=None if d.get("health") in (None, "", False) else HealthCheck.parse(d["health"]),
            update=UpdatePolicy.parse(d.get("update")),
            stop_signal=parse_stop_signal(d.get("stop_signal")),
            stop_timeout=None if d.get("stop_timeout") is None else parse_duration(
                d["stop_timeout"], field="stop_timeout", maximum=3600),
            container=ContainerOptions.parse(d),
            proxy=ProxyPolicy.parse(d.get("proxy")),
            https=HttpsPolicy.parse(d.get("https"), d.get("hsts")),
            pause_limit=0.0 if d.get("pause_limit") is None else parse_duration(
                d["pause_limit"], field="pause_limit", maximum=30 * 86_400),
            rebalance=_parse_bool(d.get("rebalance", True), field="rebalance"),
        )
        if spec.https.serves_https and spec.http_host is None:
            raise ValidationError("needs http_host (the name served over HTTPS)", field="https")
        if spec.container.network != "bridge" and spec.container_ports():
            raise ValidationError(f"ports are not published in network mode {spec.container.network}; "
                                  "drop http_port and ports", field="network")
        if spec.health is not None and spec.health.kind in ("http", "tcp") and PortSpec(port=spec.health.port) \
                not in spec.container_ports():
            raise ValidationError(f"port {spec.health.port} is not published (http_port or ports)", field="health")
        size = len(dumps(spec.to_dict()))
        if size > MAX_RECORD_BYTES:
            raise ValidationError(f"the spec is {size} bytes encoded, at most {MAX_RECORD_BYTES} allowed")
        return spec

    def __post_init__(self) -> None:
        http = PortSpec(port=self.http_port) if self.http_port is not None else None
        ports = ([http] if http else []) + [p for p in self.ports if p != http]
        object.__setattr__(self, "_container_ports", tuple(ports))
        material = {
            "image": self.image,
            "cmd": list(self.cmd),
            "env": dict(self.env),
            "ports": [str(p) for p in ports],
            "labels": dict(self.labels),
        }
        if container := self.container.to_dict():  # only when set: older specs keep their hash
            material["container"] = container
        blob = json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
        object.__setattr__(self, "_runtime_hash", hashlib.sha256(blob).hexdigest()[:16])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": str(self.name),
            "image": self.image,
            "instances": self.instances,
            "cmd": list(self.cmd),
            "env": dict(self.env),
            "ports": [str(p) for p in self.ports],
            "labels": dict(self.labels),
        }
        if self.http_host is not None:
            out["http_host"] = self.http_host
        if self.http_port is not None:
            out["http_port"] = self.http_port
        if self.health is not None:
            out["health"] = self.health.to_dict()
        if self.update != UpdatePolicy():
            out["update"] = self.update.to_dict()
        if self.stop_signal is not None:
            out["stop_signal"] = self.stop_signal
        if self.stop_timeout is not None:
            out["stop_timeout"] = f"{self.stop_timeout:g}s"
        out.update(self.container.to_dict())
        if self.proxy != ProxyPolicy():  # only when set: older agents read the spec unchanged
            out["proxy"] = self.proxy.to_dict()
        out.update(self.https.to_dict())  # (only when set, as proxy)
        if self.pause_limit:
            out["pause_limit"] = f"{self.pause_limit:g}s"
        if not self.rebalance:
            out["rebalance"] = False
        return out

    def container_ports(self) -> tuple[PortSpec, ...]:
        """Every port to publish: ``http_port`` (tcp) first, then the extra ``ports`` (computed once)."""
        return self._container_ports

    @property
    def runtime_hash(self) -> str:
        """Hash of what the container is made from; a change means: replace the container.

        ``instances`` and ``http_host`` are left out: scaling or renaming the route does not
        touch running containers, and so are the health check, update policy and stop grace.
        The container options (user, limits, volumes, ...) are in.  Computed once, when the spec
        is made.
        """
        return self._runtime_hash
