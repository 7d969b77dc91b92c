"""What starting the agent's nginx needs from the host: the Lua module's shared objects, the Lua
code and its hash, the workers' user, and whether the control socket accepts connections."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import hashlib
import os
import pwd
from collections.abc import Sequence
from pathlib import Path

from daprdockr.core.nginx_render import MODULE_DIRS
from daprdockr.errors import ProxyError

LUA_PACKAGE = "libnginx-mod-http-lua"
LUA_DIR = str(Path(__file__).resolve().parent.parent / "lua")


def worker_user() -> tuple[str, str] | None:
    """The user and group nginx workers run as: unprivileged when the agent is root."""
    if os.geteuid() != 0:
        return None  # nginx cannot switch users; workers run as we do
    for name in ("www-data", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return name, grp.getgrgid(entry.pw_gid).gr_name
    return None


def lua_version() -> str:
    """A hash of the Lua code nginx runs (the balancer, TLS): written into nginx.conf, so a
    running nginx is adopted only by an agent with the same code."""
    digest = hashlib.sha256()
    for path in sorted((Path(LUA_DIR) / "daprdockr").glob("*.lua")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def lua_modules(dirs: Sequence[str] = MODULE_DIRS) -> tuple[str, str]:
    """Paths of the NDK and lua-nginx-module shared objects, or a one-line ProxyError."""
    for d in dirs:
        ndk, lua = Path(d) / "ndk_http_module.so", Path(d) / "ngx_http_lua_module.so"
        if ndk.is_file() and lua.is_file():
            return str(ndk), str(lua)
    raise ProxyError(f"nginx's Lua module is missing (looked in {', '.join(dirs)}): install the Debian package "
                     f"{LUA_PACKAGE}")


async def control_accepts(path: str) -> bool:
    """True once a connection to the unix socket ``path`` is accepted.  The socket file appears
    at nginx's ``bind()``, a moment before its ``listen()``: a connection in between is refused."""
    try:
        _, writer = await asyncio.open_unix_connection(path)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
