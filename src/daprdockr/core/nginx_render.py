"""Rendering the agent's nginx.conf.  Pure: no I/O; deterministic output.

The config does not depend on the cluster state at all: one catch-all server routes every
request by its ``Host`` through the routing table in a ``lua_shared_dict`` (see
:mod:`daprdockr.core.routing` and ``lua/daprdockr/balancer.lua``): an unknown host gets 404, a
host without a running instance 503, and ``balancer_by_lua`` picks the peer.  So a change of
instances *or of host names* never reloads nginx; the agent posts the table's changes to a
control server on a unix socket in its private state dir.  The file holds only the agent's own
settings (listen address, workers, paths), written once when nginx starts: nginx is never
reloaded.  The balancer module is loaded at configuration time (``init_by_lua``), so ``nginx -t``
catches a broken module, and the master (root) reads it before the workers drop privileges; a
header filter records each peer's answers (progress and latency, for the least-request balancer's
stall detection, in ``dd_peers``) and a log-phase handler ends the request's count there and
ejects a peer whose connection was refused on a request's last try.  A comment line names the hash
of the balancer code, so an agent adopts a running nginx only when it runs the same code.

Proxying: ``Host``, ``X-Real-IP``, ``X-Forwarded-For``, ``X-Forwarded-Proto`` are set; WebSocket
upgrades pass through (``map $http_upgrade``); connect timeout 5 s, read 60 s (a service's
``proxy`` policy sets its own per try, from Lua).  A connection
error or timeout tries another instance (``proxy_next_upstream error timeout``, at most 3 tries;
nginx never replays a non-idempotent request that reached a backend).  Upstream keepalive
connections idle for 2 s are closed, so an instance taken out of the table has no connection
left from this nginx soon after its last request.

Workers never touch the disk: responses are not buffered to temp files and request bodies are
streamed (``proxy_max_temp_file_size 0``, ``proxy_request_buffering off``), so they can run as an
unprivileged ``worker_user`` while every file stays in the agent's private 0700 state dir; bodies
of any size pass (``client_max_body_size 0``: streamed, so no limit is needed to protect the disk).
Every path written into the file is re-validated here.

HTTPS (``https_listen``): a second server, ``ssl http2``, TLS 1.2 and 1.3 only, whose certificate
is chosen per handshake by SNI (``ssl_certificate_by_lua``, ``lua/daprdockr/tls.lua``) from the
``dd_certs`` shared dict the agent fills; its static ``ssl_certificate`` is the node's default
self-signed one (nginx needs one, and it answers a name without a certificate).  The HTTP server
answers ACME HTTP-01 challenges from ``dd_acme`` (before a service's redirect to HTTPS); the
control socket has ``/certs``, ``/acme`` and ``/ocsp`` (OCSP staples, ``dd_ocsp``) beside ``/routes``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from daprdockr.errors import ValidationError

# where Debian's nginx keeps its dynamic modules (the Lua module among them)
MODULE_DIRS = ("/usr/lib/nginx/modules", "/usr/share/nginx/modules", "/etc/nginx/modules")

_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")


def _safe_path(path: str, *, field: str) -> str:
    if not _SAFE_PATH.fullmatch(path):
        raise ValidationError(f"{path!r} is not a plain absolute path", field=field)
    return path


@dataclass(frozen=True, slots=True, kw_only=True)
class NginxPaths:
    """Where the managed nginx keeps its files (all under the agent's state dir), and where the
    Lua module and the balancer's Lua code are."""

    root: str
    modules: tuple[str, ...] = ()  # load_module paths: the NDK, then lua-nginx-module
    lua: str = ""  # directory holding daprdockr/balancer.lua

    def __post_init__(self) -> None:
        _safe_path(self.root, field="state_dir")
        for path in (*self.modules, *([self.lua] if self.lua else [])):
            _safe_path(path, field="nginx module")

    @property
    def pid(self) -> str:
        return f"{self.root}/nginx.pid"

    @property
    def error_log(self) -> str:
        return f"{self.root}/error.log"

    @property
    def temp(self) -> str:
        return f"{self.root}/tmp"

    @property
    def control(self) -> str:
        return f"{self.root}/control.sock"

    @property
    def default_cert(self) -> str:
        return f"{self.root}/tls-default.pem"

    @property
    def default_key(self) -> str:
        return f"{self.root}/tls-default.key"


_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def _user(user_and_group: tuple[str, str]) -> str:
    for name in user_and_group:
        if not _USER.fullmatch(name):
            raise ValidationError(f"{name!r} is not a user or group name", field="nginx user")
    return " ".join(user_and_group)


def _listen(listen: tuple[str, int], *, field: str = "http_listen") -> str:
    host, port = listen
    ip = ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValidationError(f"bad listen port {port}", field=field)
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


TEMPLATE = """\
# generated by daprdockr; do not edit.  Routes live in the dd_routes shared dict, not here.
# balancer {balancer}
{modules}{user}worker_processes {workers};
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
    lua_package_path "{lua}/?.lua;;";
    lua_shared_dict dd_routes 16m;
    lua_shared_dict dd_eject 1m;
    lua_shared_dict dd_stats 1m;
    lua_shared_dict dd_peers 16m;
    lua_shared_dict dd_certs 16m;
    lua_shared_dict dd_acme 1m;
    lua_shared_dict dd_ocsp 8m;
    init_by_lua_block {{
        require("daprdockr.balancer").configure({{ https_port = {https_port} }})
        require("daprdockr.tls")
    }}
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
    upstream dd_balancer {{
        server 0.0.0.1;
        balancer_by_lua_block {{ require("daprdockr.balancer").balance() }}
        keepalive 64;
        keepalive_timeout 2s;
    }}
    server {{
        listen {listen} default_server;
        server_name _;
        location ^~ /.well-known/acme-challenge/ {{
            access_by_lua_block {{ require("daprdockr.tls").challenge() }}
            proxy_pass http://dd_balancer;
            header_filter_by_lua_block {{ require("daprdockr.balancer").header() }}
            log_by_lua_block {{ require("daprdockr.balancer").log() }}
        }}
        location / {{
            access_by_lua_block {{ require("daprdockr.balancer").route() }}
            proxy_pass http://dd_balancer;
            header_filter_by_lua_block {{ require("daprdockr.balancer").header() }}
            log_by_lua_block {{ require("daprdockr.balancer").log() }}
        }}
    }}
{tls_server}    server {{
        listen unix:{control};
        client_body_buffer_size 16m;
        client_max_body_size 16m;
        location = /routes {{
            content_by_lua_block {{ require("daprdockr.balancer").control() }}
        }}
        location = /certs {{
            content_by_lua_block {{ require("daprdockr.tls").certs_control() }}
        }}
        location = /acme {{
            content_by_lua_block {{ require("daprdockr.tls").acme_control() }}
        }}
        location = /ocsp {{
            content_by_lua_block {{ require("daprdockr.tls").ocsp_control() }}
        }}
    }}
}}
"""


TLS_SERVER = """\
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:dd_ssl:10m;
    ssl_session_timeout 1h;
    server {{
        listen {listen} ssl http2 default_server;
        server_name _;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_certificate_by_lua_block {{ require("daprdockr.tls").cert() }}
        location / {{
            access_by_lua_block {{ require("daprdockr.balancer").route_tls() }}
            proxy_pass http://dd_balancer;
            header_filter_by_lua_block {{ require("daprdockr.balancer").header() }}
            log_by_lua_block {{ require("daprdockr.balancer").log() }}
        }}
    }}
"""


def render_nginx_conf(
    *,
    listen: tuple[str, int],
    paths: NginxPaths,
    worker_user: tuple[str, str] | None = None,
    workers: int = 2,
    connections: int = 4096,
    balancer: str = "",
    https_listen: tuple[str, int] | None = None,
) -> str:
    """The whole nginx.conf: the same for any cluster state.  ``balancer`` (a hash of the Lua
    code) only marks the file, so an agent adopts a running nginx only if it runs the same code.
    ``https_listen``: the HTTPS server's address (None: no HTTPS server)."""
    if not re.fullmatch(r"[0-9a-f]*", balancer):
        raise ValidationError(f"{balancer!r} is not a hex digest", field="balancer")
    tls_server = ""
    if https_listen is not None:
        if https_listen == listen:
            raise ValidationError("must differ from the HTTP listen address", field="https_listen")
        tls_server = TLS_SERVER.format(listen=_listen(https_listen, field="https_listen"), cert=paths.default_cert,
                                       key=paths.default_key)
    return TEMPLATE.format(balancer=balancer or "-",
        modules="".join(f"load_module {m};\n" for m in paths.modules),
        user=f"user {_user(worker_user)};\n" if worker_user else "", workers=int(workers), pid=paths.pid,
        error_log=paths.error_log, connections=int(connections), temp=paths.temp, lua=paths.lua,
        listen=_listen(listen), control=paths.control, tls_server=tls_server,
        https_port=int(https_listen[1]) if https_listen is not None else "nil",
    )
