"""What a service's containers are made of beyond image and command: user, working directory,
entrypoint, hostname, memory and CPU limits, a process limit, volumes, network mode.  Pure.

In a spec these are flat fields (``user``, ``workdir``, ``entrypoint``, ``hostname``, ``memory``,
``cpus``, ``cpu_shares``, ``pids_limit``, ``volumes``, ``network``), validated strictly with errors
naming the field, and all part of the spec's runtime hash (a change replaces the containers).

Volumes are strings, as with ``docker run -v``:

* ``"/data"``                 an anonymous volume at ``/data``;
* ``"cache:/data[:ro]"``      the named Docker volume ``cache`` (created by Docker if missing);
* ``"/srv/www:/www[:ro]"``    a bind mount of a host path.  The spec may name any absolute path;
  each agent starts such a container only if the path lies under one of its ``--allow-bind``
  paths (none by default), because a bind mount is root on the host.

``hostname`` defaults to ``<n>.<service>.<group>`` (per instance, at most 63 characters).
``network`` is ``bridge`` (default), ``host`` (no ports are published: the container uses the
host's) or ``none``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from daprdockr.errors import ValidationError

NetworkMode = Literal["bridge", "host", "none"]
NETWORK_MODES: tuple[NetworkMode, ...] = ("bridge", "host", "none")
FIELDS = frozenset({"user", "workdir", "entrypoint", "hostname", "memory", "cpus", "cpu_shares", "pids_limit",
                    "volumes", "network"})
MAX_VOLUMES = 32
MAX_ENTRYPOINT = 64
MIN_MEMORY = 6 * 1024 * 1024  # Docker refuses less
MAX_MEMORY = 1 << 40
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?")
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([bkmg]?)b?", re.I)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
VolumeKind = Literal["anonymous", "volume", "bind"]


def _path(value: object, *, field: str) -> str:
    """An absolute, normalised container or host path."""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 1024 or "\x00" in value:
        raise ValidationError(f"{value!r} is not an absolute path", field=field)
    if ".." in value.split("/") or ":" in value or "," in value:
        raise ValidationError(f"{value!r}: no '..', ':' or ',' in paths", field=field)
    return posixpath.normpath(value) if value != "/" else value


@dataclass(frozen=True, order=True, slots=True)
class Volume:
    target: str
    kind: VolumeKind = "anonymous"
    source: str = ""
    read_only: bool = False

    @classmethod
    def parse(cls, value: object) -> Volume:
        if not isinstance(value, str) or not value:
            raise ValidationError(f"{value!r} is not like /path, name:/path or /host/path:/path[:ro]",
                                  field="volumes")
        parts = value.split(":")
        mode = ""
        if len(parts) in (2, 3) and parts[-1] in ("ro", "rw"):
            mode = parts.pop()
        if len(parts) == 1:
            if mode:
                raise ValidationError(f"{value!r}: an anonymous volume takes no mode", field="volumes")
            return cls(target=_path(parts[0], field="volumes"))
        if len(parts) != 2:
            raise ValidationError(f"{value!r} is not like /path, name:/path or /host/path:/path[:ro]",
                                  field="volumes")
        source, target = parts
        if source.startswith("/"):
            return cls(target=_path(target, field="volumes"), kind="bind", source=_path(source, field="volumes"),
                       read_only=mode == "ro")
        if not _VOLUME_NAME.fullmatch(source):
            raise ValidationError(f"{source!r} is not a volume name or an absolute host path", field="volumes")
        return cls(target=_path(target, field="volumes"), kind="volume", source=source, read_only=mode == "ro")

    def __str__(self) -> str:
        if self.kind == "anonymous":
            return self.target
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")


def parse_memory(value: object) -> int:
    """Bytes from ``536870912``, ``"512m"``, ``"1g"``, ``"1.5GB"``."""
    if isinstance(value, bool):
        raise ValidationError(f"{value!r} is not a size", field="memory")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.fullmatch(value.strip())):
        size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    else:
        raise ValidationError(f"{value!r} is not a size (bytes, or like 512m, 1g)", field="memory")
    if not MIN_MEMORY <= size <= MAX_MEMORY:
        raise ValidationError(f"{value!r} is outside 6m..1024g", field="memory")
    return size


def _int(value: object, *, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{value!r} must be an integer {low}..{high}", field=field)
    return value


def _args(value: object, *, field: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValidationError('must be a list of arguments; for a shell string pass ["sh", "-c", "..."]', field=field)
    if (not isinstance(value, list) or len(value) > MAX_ENTRYPOINT
            or not all(isinstance(a, str) and "\x00" not in a and len(a) <= 8192 for a in value)):
        raise ValidationError("must be a list of strings", field=field)
    return tuple(value)


def validate_container_hostname(value: object) -> str:
    if (not isinstance(value, str) or not 0 < len(value) <= 63
            or not all(_HOST_LABEL.fullmatch(label) for label in value.split("."))):
        raise ValidationError(f"{value!r} is not a host name (labels of letters, digits, '-'; at most 63)",
                              field="hostname")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerOptions:
    user: str = ""
    workdir: str = ""
    entrypoint: tuple[str, ...] | None = None  # None: the image's; () clears it
    hostname: str = ""  # "": <n>.<service>.<group>
    memory: int = 0  # bytes, 0: no limit
    cpus: float = 0.0  # 0: no limit
    cpu_shares: int = 0  # 0: Docker's default weight
    pids_limit: int = 0  # 0: no limit
    volumes: tuple[Volume, ...] = ()
    network: NetworkMode = "bridge"

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> ContainerOptions:
        """From a spec's flat fields (other keys are the caller's)."""
        opts: dict[str, Any] = {}
        if d.get("user") not in (None, ""):
            if not isinstance(d["user"], str) or not _USER.fullmatch(d["user"]):
                raise ValidationError(f"{d['user']!r} is not <user>[:<group>] (names or ids)", field="user")
            opts["user"] = d["user"]
        if d.get("workdir") not in (None, ""):
            opts["workdir"] = _path(d["workdir"], field="workdir")
        if d.get("entrypoint") is not None:
            opts["entrypoint"] = _args(d["entrypoint"], field="entrypoint")
        if d.get("hostname") not in (None, ""):
            opts["hostname"] = validate_container_hostname(d["hostname"])
        if d.get("memory") not in (None, 0, ""):
            opts["memory"] = parse_memory(d["memory"])
        if d.get("cpus") not in (None, 0):
            cpus = d["cpus"]
            if isinstance(cpus, bool) or not isinstance(cpus, int | float) or not 0.01 <= cpus <= 1024:
                raise ValidationError(f"{cpus!r} must be a number 0.01..1024", field="cpus")
            opts["cpus"] = float(cpus)
        if d.get("cpu_shares") not in (None, 0):
            opts["cpu_shares"] = _int(d["cpu_shares"], field="cpu_shares", low=2, high=262144)
        if d.get("pids_limit") not in (None, 0):
            opts["pids_limit"] = _int(d["pids_limit"], field="pids_limit", low=1, high=4194304)
        volumes = d.get("volumes") or []
        if not isinstance(volumes, list) or len(volumes) > MAX_VOLUMES:
            raise ValidationError(f"must be a list of at most {MAX_VOLUMES} volumes", field="volumes")
        parsed = tuple(sorted({Volume.parse(v) for v in volumes}))
        targets = [v.target for v in parsed]
        if len(set(targets)) != len(targets):
            raise ValidationError("two volumes at the same container path", field="volumes")
        if parsed:
            opts["volumes"] = parsed
        network = d.get("network") or "bridge"
        if network not in NETWORK_MODES:
            raise ValidationError(f"{network!r} is not one of {', '.join(NETWORK_MODES)}", field="network")
        opts["network"] = network
        return cls(**opts)

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from the defaults (so older specs keep their hash)."""
        out: dict[str, Any] = {}
        for key, value in (("user", self.user), ("workdir", self.workdir), ("hostname", self.hostname),
                           ("memory", self.memory), ("cpus", self.cpus), ("cpu_shares", self.cpu_shares),
                           ("pids_limit", self.pids_limit)):
            if value:
                out[key] = value
        if self.entrypoint is not None:
            out["entrypoint"] = list(self.entrypoint)
        if self.volumes:
            out["volumes"] = [str(v) for v in self.volumes]
        if self.network != "bridge":
            out["network"] = self.network
        return out

    def binds(self) -> tuple[Volume, ...]:
        return tuple(v for v in self.volumes if v.kind == "bind")


def default_hostname(*, number: int, service: str, group: str) -> str:
    """``<n>.<service>.<group>``, shortened to whole labels within 63 characters."""
    labels = [str(number), service, group]
    while len(".".join(labels)) > 63 and len(labels) > 1:
        labels.pop()
    return ".".join(labels)[:63]
