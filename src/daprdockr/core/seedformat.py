"""The original DaprDockr's service JSON, read and written.  Pure.

The original stored (and ``daprdockrcmd -stdin`` read) its Go config type, whose ``Container`` is
the Docker (0.7) container config::

    {"Name": "web", "Group": "myapp", "Instances": 3,
     "Container": {"Image": "...", "Cmd": ["..."], "Env": ["K=V"], "ExposedPorts": {"8080/tcp": {}},
                   "User": "...", "WorkingDir": "...", "Entrypoint": ["..."], "Hostname": "...",
                   "Memory": 0, "CpuShares": 0, "Volumes": {"/data": {}}, "NetworkDisabled": false, ...},
     "Http": {"HostName": "example.com", "ContainerPort": "9000"}}

Keys match case-insensitively, as Go's JSON decoding does.  Field mapping (original -> ours):
``Name``+``Group`` -> ``name``; ``Instances``; ``Container.Image`` -> ``image``; ``Cmd`` -> ``cmd``;
``Env`` (``K=V`` list) -> ``env``; ``ExposedPorts`` keys -> ``ports``; ``User`` -> ``user``;
``WorkingDir`` -> ``workdir``; ``Entrypoint`` -> ``entrypoint``; ``Hostname`` -> ``hostname``;
``Memory`` (bytes) -> ``memory``; ``CpuShares`` -> ``cpu_shares``; ``Volumes`` keys -> anonymous
``volumes``; ``NetworkDisabled: true`` -> ``network: none``; ``Labels`` (not in the original's
type, accepted as a later Docker's) -> ``labels``; ``Http.HostName`` -> ``http_host``;
``Http.ContainerPort`` (a string) -> ``http_port``.  ``Instances`` missing, ``null`` or ``0`` is 0
instances, as in Go; other zero values (``""``, ``0``, ``false``, ``null``) mean "not set".
Fields of Docker's config that DaprDockr does not manage (``Domainname``, ``MemorySwap``, ``Dns``,
``VolumesFrom``, ...) are returned as *ignored* so the caller can say so; Go ignored them
silently, which this does not.

:func:`to_seed` gives the original's type with every field, in Go's order and with Go's zero
values; :func:`marshal_indent` writes it as Go's ``json.MarshalIndent(v, "", "  ")`` did.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daprdockr.core.model import ServiceSpec
from daprdockr.errors import ValidationError

_TOP = {"name", "group", "instances", "container", "http"}
_CONTAINER = {"image": "image", "cmd": "cmd", "env": "env", "exposedports": "ports", "user": "user",
              "workingdir": "workdir", "entrypoint": "entrypoint", "hostname": "hostname", "memory": "memory",
              "cpushares": "cpu_shares", "volumes": "volumes", "labels": "labels", "networkdisabled": "network"}
# Docker 0.7's container config (github.com/dotcloud/docker Config), the original's Container type,
# in its field order with each field's Go zero value
_GO_CONTAINER: tuple[tuple[str, Any], ...] = (
    ("Hostname", ""), ("Domainname", ""), ("User", ""), ("Memory", 0), ("MemorySwap", 0), ("CpuShares", 0),
    ("AttachStdin", False), ("AttachStdout", False), ("AttachStderr", False), ("PortSpecs", None),
    ("ExposedPorts", None), ("Tty", False), ("OpenStdin", False), ("StdinOnce", False), ("Env", None),
    ("Cmd", None), ("Dns", None), ("Image", ""), ("Volumes", None), ("VolumesFrom", ""), ("WorkingDir", ""),
    ("Entrypoint", None), ("NetworkDisabled", False),
)


def is_seed_doc(doc: Mapping[str, Any]) -> bool:
    """A document in the original's shape: a ``Container`` object, or capitalised top-level keys."""
    keys = {str(k) for k in doc}
    return any(k.lower() == "container" for k in keys) or (
        bool(keys) and all(k[:1].isupper() for k in keys) and {k.lower() for k in keys} <= _TOP)


def _fold(d: Mapping[str, Any], *, what: str) -> dict[str, Any]:
    """Keys lower-cased (Go matches case-insensitively); two spellings of one key are an error."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = str(k).lower()
        if key in out:
            raise ValidationError(f"{what}: {k!r} is given twice (keys match without regard to case)")
        out[key] = v
    return out


def _set(value: object) -> bool:
    return value not in (None, "", 0, [], {})


def from_seed(doc: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Our spec dict from an original document, and the original fields that were ignored."""
    top = _fold(doc, what="service")
    ignored = [f"{k}" for k in doc if str(k).lower() not in _TOP]
    out: dict[str, Any] = {}
    name, group = top.get("name"), top.get("group")
    if _set(name) or _set(group):
        if not isinstance(name, str) or not isinstance(group, str):
            raise ValidationError("Name and Group must both be strings", field="Name")
        out["name"] = f"{name}.{group}"
    instances = top.get("instances")
    out["instances"] = 0 if instances is None else instances  # Go's zero value: no instances
    container = top.get("container") or {}
    if not isinstance(container, Mapping):
        raise ValidationError("must be an object", field="Container")
    c = _fold(container, what="Container")
    for key, value in c.items():
        ours = _CONTAINER.get(key)
        if ours is None:
            if _set(value):
                ignored.append(f"Container.{key}")
            continue
        if not _set(value):
            continue
        if ours == "network":
            if not isinstance(value, bool):
                raise ValidationError("must be true or false", field="Container.NetworkDisabled")
            out["network"] = "none"
        elif ours == "env":
            if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
                raise ValidationError('must be a list of "K=V" strings', field="Container.Env")
            env: dict[str, str] = {}
            for item in value:
                k, sep, v = item.partition("=")
                if not sep:
                    raise ValidationError(f"{item!r} is not K=V", field="Container.Env")
                env[k] = v
            out["env"] = env
        elif ours in ("ports", "volumes"):
            if not isinstance(value, Mapping):
                raise ValidationError("must be an object keyed by port or path", field=f"Container.{key}")
            out[ours] = sorted(str(k) for k in value)
        else:
            out[ours] = value
    http = top.get("http") or {}
    if not isinstance(http, Mapping):
        raise ValidationError("must be an object", field="Http")
    h = _fold(http, what="Http")
    if _set(h.get("hostname")):
        out["http_host"] = h["hostname"]
    port = h.get("containerport")
    if _set(port):
        if isinstance(port, str) and port.strip().isdigit():
            port = int(port)
        out["http_port"] = port
    ignored += [f"Http.{k}" for k in http if str(k).lower() not in ("hostname", "containerport")]
    return out, ignored


def to_seed(spec: ServiceSpec) -> dict[str, Any]:
    """The original's config type for ``spec``: every field, in Go's order, unset ones as Go's zero
    values (``""``, ``0``, ``false``, ``null``).  What the original's type cannot hold (health checks,
    the update policy, labels, ``cpus``, ``pids_limit``, named volumes and bind mounts, host
    networking) is left out."""
    o = spec.container
    ours: dict[str, Any] = {
        "Hostname": o.hostname, "User": o.user, "Memory": o.memory, "CpuShares": o.cpu_shares,
        "ExposedPorts": {str(p): {} for p in sorted(spec.container_ports(), key=str)} or None,
        "Env": [f"{k}={v}" for k, v in spec.env] or None, "Cmd": list(spec.cmd) or None, "Image": spec.image,
        "Volumes": {t: {} for t in sorted(v.target for v in o.volumes if v.kind == "anonymous")} or None,
        "WorkingDir": o.workdir, "Entrypoint": list(o.entrypoint) if o.entrypoint is not None else None,
        "NetworkDisabled": o.network == "none",
    }
    return {
        "Name": spec.name.service, "Group": spec.name.group, "Instances": spec.instances,
        "Container": {key: ours.get(key, zero) for key, zero in _GO_CONTAINER},
        "Http": {"HostName": spec.http_host or "",
                 "ContainerPort": str(spec.http_port) if spec.http_port is not None else ""},
    }


def _go_string(text: str) -> str:
    """A JSON string as Go's encoder writes it: ``<``, ``>``, ``&``, U+2028/9 and control
    characters other than newline and return as ``\\u`` escapes, the rest as UTF-8."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch < " " or ch in "<>&\u2028\u2029":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def marshal_indent(value: Any, *, indent: str = "  ", _level: int = 0) -> str:
    """``value`` (dicts in the order to print; Go sorts map keys, so give maps sorted) as Go's
    ``json.MarshalIndent(value, "", indent)``: ``null``, ``{}`` and ``[]`` as such."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _go_string(value)
    inner, outer = indent * (_level + 1), indent * _level
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = [f"{inner}{_go_string(str(k))}: {marshal_indent(v, indent=indent, _level=_level + 1)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + outer + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        items = [inner + marshal_indent(v, indent=indent, _level=_level + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + outer + "]"
    raise TypeError(f"cannot encode {type(value).__name__}")
