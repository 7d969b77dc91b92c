"""Rendering nginx.conf from the cluster state.  Pure: no I/O; deterministic output.

One ``upstream`` per service with an ``http_host`` (named by :func:`upstream_name`, injective):
servers are ``<address>:<published port>`` of every *running* instance (on every node) for the
spec's ``http_port``; an instance whose address is not an IP literal is left out alone.  Each service gets a
``server`` block with ``server_name <http_host>``; a service with no running instance answers
503; any other Host gets 404 from the default server.  ``max_fails=0`` keeps nginx from marking
every backend down after resets during reloads, and ``proxy_next_upstream`` retries another
instance on connection errors.  WebSocket upgrades pass through (``map $http_upgrade``).

Workers never touch the disk: responses are not buffered to temp files and request bodies are
streamed (``proxy_max_temp_file_size 0``, ``proxy_request_buffering off``), so they can run as an
unprivileged ``worker_user`` while every file stays in the agent's private 0700 state dir; bodies
of any size pass (``client_max_body_size 0``: streamed, so no limit is needed to protect the disk).

Everything written into the file is re-validated here (hostnames, IP literals, ports, paths), so
even a bad record that slipped past input validation cannot inject configuration: such a service
is left out and reported in :attr:`Rendered.errors`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName, validate_hostname
from daprdockr.core.state import ClusterState
from daprdockr.errors import ValidationError

_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+-]*$")


@dataclass(frozen=True, slots=True, kw_only=True)
class NginxPaths:
    """Where the managed nginx keeps its files (all under the agent's state dir)."""

    root: str

    def __post_init__(self) -> None:
        if not _SAFE_PATH.fullmatch(self.root):
            raise ValidationError(f"{self.root!r} is not a plain absolute path", field="state_dir")

    @property
    def pid(self) -> str:
        return f"{self.root}/nginx.pid"

    @property
    def error_log(self) -> str:
        return f"{self.root}/error.log"

    @property
    def temp(self) -> str:
        return f"{self.root}/tmp"


@dataclass(frozen=True, slots=True)
class Rendered:
    text: str
    services: tuple[ServiceName, ...]  # rendered with routes
    errors: dict[ServiceName, str] = field(default_factory=dict)  # left out, with the reason


_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def _user(user_and_group: tuple[str, str]) -> str:
    for name in user_and_group:
        if not _USER.fullmatch(name):
            raise ValidationError(f"{name!r} is not a user or group name", field="nginx user")
    return " ".join(user_and_group)


def _listen(listen: tuple[str, int]) -> str:
    host, port = listen
    ip = ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValidationError(f"bad listen port {port}", field="http_listen")
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def _escape(label: str) -> str:
    return label.replace("-", "_h")


def upstream_name(name: ServiceName) -> str:
    """``dd_<group>_s<service>`` with ``-`` written ``_h``: injective, so no two services share it.

    Labels hold only ``[a-z0-9-]``, so every ``_`` in the result is followed by ``h`` (a hyphen)
    or ``s`` (the separator) and the name decodes back to exactly one service.
    """
    return f"dd_{_escape(name.group)}_s{_escape(name.service)}"


def _backends(state: ClusterState, spec: ServiceSpec) -> list[str]:
    """``addr:port`` of every running instance; one with a bad address is left out alone."""
    assert spec.http_port is not None
    result = set()
    for rec in state.instances_of(spec.name):
        port = rec.port_for(spec.http_port)
        if rec.state != "running" or port is None:
            continue
        try:
            ip = ipaddress.ip_address(rec.address)
        except ValueError:  # not an IP literal: never written into the config
            continue
        result.add(f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{int(port)}")
    return sorted(result)


def _service_block(state: ClusterState, spec: ServiceSpec, listen: str) -> str:
    host = validate_hostname(spec.http_host)
    backends = _backends(state, spec)
    if not backends:
        return (
            f"    server {{\n        listen {listen};\n        server_name {host};\n"
            f"        return 503;\n    }}\n"
        )
    upstream = upstream_name(spec.name)
    servers = "".join(f"        server {b} max_fails=0;\n" for b in backends)
    return (
        f"    upstream {upstream} {{\n{servers}        keepalive 32;\n    }}\n"
        f"    server {{\n        listen {listen};\n        server_name {host};\n"
        f"        location / {{\n            proxy_pass http://{upstream};\n        }}\n    }}\n"
    )


HEAD = """\
# generated by daprdockr from etcd state; do not edit
{user}worker_processes {workers};
pid {pid};
error_log {error_log} warn;
daemon off;
worker_shutdown_timeout 10s;
events {{
    worker_connections {connections};
}}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {temp}/client;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server_names_hash_bucket_size 128;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' '';
    }}
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
    proxy_connect_timeout 5s;
    proxy_send_timeout 60s;
    proxy_read_timeout 60s;
    proxy_max_temp_file_size 0;
    proxy_request_buffering off;
    client_max_body_size 0;
    proxy_next_upstream error timeout;
    proxy_next_upstream_tries 3;
    server {{
        listen {listen} default_server;
        server_name _;
        return 404;
    }}
"""


def render_nginx_conf(
    state: ClusterState,
    *,
    listen: tuple[str, int],
    paths: NginxPaths,
    worker_user: tuple[str, str] | None = None,
    workers: int = 2,
    connections: int = 4096,
    skip: frozenset[ServiceName] = frozenset(),
    only: frozenset[ServiceName] | None = None,
) -> Rendered:
    """The full nginx.conf for ``state``.  ``skip``/``only`` select services (used to isolate
    a service that makes ``nginx -t`` fail)."""
    lst = _listen(listen)
    parts = [
        HEAD.format(
            user=f"user {_user(worker_user)};\n" if worker_user else "", workers=int(workers), pid=paths.pid,
            error_log=paths.error_log, connections=int(connections), temp=paths.temp, listen=lst,
        )
    ]
    rendered: list[ServiceName] = []
    errors: dict[ServiceName, str] = {}
    for name in sorted(state.services, key=str):
        spec = state.services[name]
        if spec.http_host is None or spec.http_port is None or name in skip:
            continue
        if only is not None and name not in only:
            continue
        try:
            parts.append(_service_block(state, spec, lst))
            rendered.append(name)
        except (ValidationError, ValueError) as exc:
            errors[name] = f"not routed: {exc}"
    parts.append("}\n")
    return Rendered(text="".join(parts), services=tuple(rendered), errors=errors)
