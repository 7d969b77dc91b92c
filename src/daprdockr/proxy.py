"""The agent's own nginx: a supervised child process whose routes change without reloads.

* nginx runs in the foreground (``daemon off``) in its own process group, with its config, pid
  file, logs, temp dirs and control socket under ``state_dir``.  Its config never depends on the
  cluster (:mod:`daprdockr.core.nginx_render`): one catch-all server routes by ``Host`` through a
  table in a Lua shared dict, and ``balancer_by_lua`` picks the peer.  It needs Debian's
  ``libnginx-mod-http-lua``; when that module is missing, :meth:`NginxManager.start` refuses with
  one line naming the package.
* :meth:`NginxManager.update` computes the routing table (pure, :mod:`daprdockr.core.routing`)
  and marks the manager dirty; the run loop posts the table's changes to the control socket at
  once (a push in flight coalesces the changes that arrive meanwhile).  No membership change and
  no new or removed host name ever reloads nginx.  :attr:`applied_revision` is the etcd revision
  of the newest state nginx confirmed, acknowledged to confirmed removal (``acks``, router
  ``nginx``: :class:`~daprdockr.core.removal_tracker.Acknowledgements`) as it changes.
* If the master dies, the group is killed (no orphaned workers holding the port) and nginx is
  started again after the delay chosen by the pure
  :class:`~daprdockr.core.restart_policy.RestartPolicy`; the full table is posted right after
  the start, and until it arrives requests wait in nginx (up to 3 s) instead of being answered
  404.  The agent stays up meanwhile.
* An agent that dies (SIGKILL, a crash) leaves its nginx serving its last table; the next agent
  of the node *adopts* it (same config, same balancer code: its pid file, its control socket)
  and posts its current table, so a restart drops no connection.  A master it cannot adopt (an
  upgrade changed the config or the Lua code) is replaced as before.  Nobody adopting it, the
  master quits by itself ``orphan_timeout`` seconds after the last agent's heartbeat
  (:mod:`daprdockr.adapters.nginx_master`).  The master as a process (config test, adoption,
  start, stop, kill) is :class:`~daprdockr.adapters.nginx_process.NginxProcess`.
* Files: the manager's directory is private (0700, refused if another user could tamper with it,
  :mod:`daprdockr.adapters.statedir`); every file is written without following symlinks and
  renamed into place.  Run as root, nginx's workers run as ``www-data`` (else ``nobody``) and
  never touch the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from daprdockr.adapters.cut_connections import DeadHostCuts
from daprdockr.adapters.nginx_process import NginxProcess
from daprdockr.adapters.nginx_setup import LUA_DIR, control_accepts, lua_modules, lua_version, worker_user
from daprdockr.adapters.nginx_tls import TlsPush, ensure_default_cert
from daprdockr.adapters.process import kill_group
from daprdockr.adapters.statedir import prepare_state_dir, write_private
from daprdockr.core.nginx_render import MODULE_DIRS, NginxPaths, render_nginx_conf
from daprdockr.core.records import NodeRecord
from daprdockr.core.removal_tracker import Acknowledgements
from daprdockr.core.restart_policy import RestartPolicy, RestartState
from daprdockr.core.routing import RoutingCache, Table, host_addresses, table_update
from daprdockr.core.state import ClusterState
from daprdockr.errors import DaprDockrError, ProxyError

log = logging.getLogger(__name__)
__all__ = ["LUA_DIR", "NginxManager", "NginxStats", "control_accepts", "lua_modules"]

MAX_UNIX_PATH = 107
ROUTER = "nginx"  # its name to confirmed removal


@dataclass(slots=True)
class NginxStats:
    restarts: int = 0
    table_updates: int = 0
    update_failures: int = 0
    retries: int = 0  # from nginx: requests tried on another instance
    ejections: int = 0  # from nginx: instances skipped for a while after a refused/timed out try
    cut: int = 0  # connections to instances of gone hosts ended at once (ss -K)
    handshakes: int = 0  # from nginx: TLS handshakes that chose a certificate (resumed sessions do not)


class NginxManager:
    name = "nginx"

    def __init__(
        self,
        *,
        state_dir: Path,
        listen: tuple[str, int],
        binary: str = "nginx",
        restart_policy: RestartPolicy | None = None,
        workers: int = 2,
        module_dirs: Sequence[str] = MODULE_DIRS,
        acks: Acknowledgements | None = None,
        stats_every: float = 2.0,
        orphan_timeout: float = 60.0,
        https_listen: tuple[str, int] | None = None,
        node: str = "node",
    ) -> None:
        self.state_dir = Path(os.path.abspath(state_dir))
        self.listen = listen
        self.https_listen = https_listen
        self.node = node  # named in the default certificate
        self.tls = TlsPush()  # the certificates and ACME answers nginx holds (adapters/nginx_tls.py)
        self.master = NginxProcess(state_dir=self.state_dir, binary=binary, listen=listen, https_listen=https_listen,
                                   orphan_timeout=orphan_timeout)
        self.policy = restart_policy or RestartPolicy()
        self.workers = workers
        self.module_dirs = tuple(module_dirs)
        self.acks = acks
        self.stats_every = stats_every
        self.stats = NginxStats()
        self.last_error = ""
        self.applied_revision = 0
        if acks is not None:
            acks.acknowledge(ROUTER, 0)  # (it counts from now: nothing confirmed yet)
        self._want: tuple[Table, int] = ({}, 0)
        self._routes = RoutingCache()  # the table, kept per service
        self._nodes_seen: Mapping[str, NodeRecord] | None = None
        self._live_hosts: frozenset[str] = frozenset()  # addresses of the live nodes
        self._cuts = DeadHostCuts(on_cut=self._count_cut)
        self._sent: Table | None = None  # None: nginx has no table yet (just (re)started)
        self._generation = 0
        self._dirty = asyncio.Event()
        self._restart = RestartState()
        self._session: aiohttp.ClientSession | None = None
        self._stats_at = 0.0

    # ------------------------------------------------------------------ status
    @property
    def healthy(self) -> bool:
        return self.master.running

    @property
    def pid(self) -> int | None:
        return self.master.proc.pid if self.master.proc is not None else None

    @property
    def adopted(self) -> bool:
        return self.master.adopted

    @property
    def leave_running(self) -> bool:
        return self.master.leave_running

    @leave_running.setter
    def leave_running(self, value: bool) -> None:
        self.master.leave_running = value

    @property
    def paths(self) -> NginxPaths:
        return self.master.paths

    @property
    def conf(self) -> Path:
        return self.master.conf

    @property
    def table(self) -> Table:
        """The routing table nginx last confirmed."""
        return dict(self._sent or {})

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Write and test the config, start the master, load the table; ProxyError if impossible."""
        try:
            prepare_state_dir(self.state_dir)
            (self.state_dir / "tmp").mkdir(mode=0o700, exist_ok=True)
        except DaprDockrError as exc:
            raise ProxyError(str(exc)) from exc
        if len(self.paths.control) > MAX_UNIX_PATH:
            raise ProxyError(f"state dir {self.state_dir}: the control socket path would be longer than "
                             f"{MAX_UNIX_PATH} characters; use a shorter --state-dir")
        self.master.paths = NginxPaths(root=str(self.state_dir), modules=lua_modules(self.module_dirs), lua=LUA_DIR)
        if self.https_listen is not None:
            ensure_default_cert(self.paths, node=self.node)
        text = render_nginx_conf(listen=self.listen, paths=self.paths, worker_user=worker_user(),
                                 workers=self.workers, balancer=lua_version(), https_listen=self.https_listen)
        if await self.master.adopt(text):
            self._nginx_has_nothing_of_ours()  # (its routes stay until our first real table: update())
        else:
            error = await self.master.test(text)
            if error:
                raise ProxyError(f"nginx rejects its configuration: {error}")
            write_private(self.conf, text, mode=0o644)
            await self.master.kill_stale_master()
            await self._spawn()
        await self.master.guard()
        if not self.adopted:
            await self.push_once()

    async def _spawn(self) -> None:
        self._restart = self.policy.on_start(self._restart, now=time.monotonic())  # (a start that fails counts)
        self._nginx_has_nothing_of_ours()
        await self.master.spawn()

    def _nginx_has_nothing_of_ours(self) -> None:
        """A new (or adopted) master: our whole table and every certificate go in at once."""
        self._sent = None
        self.tls.reset()

    async def stop(self, *, grace: float = 5.0) -> None:
        """Graceful quit, then SIGKILL of the group after ``grace`` seconds; with
        ``leave_running``, nginx keeps serving for the next agent to adopt."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.master.stop(grace=grace)

    def kill(self) -> None:
        """SIGKILL nginx's whole process group now (the agent is exiting without a clean stop)."""
        self.master.kill()

    # ------------------------------------------------------------------ the routing table
    def update(self, state: ClusterState) -> None:
        self._want = (self._routes.table(state), state.revision)
        if state.nodes is not self._nodes_seen:  # (the mirror shares the dict until a node record changes)
            self._nodes_seen = state.nodes
            self._live_hosts = host_addresses(state)
        self._dirty.set()

    def set_tls(self, *, certs: Mapping[str, str], challenges: Mapping[str, str]) -> None:
        """What nginx should serve over HTTPS (host -> PEM: chain then key) and the ACME answers
        (token -> key authorization); posted as changes by the loop."""
        self.tls.want(certs=certs, challenges=challenges)
        self._dirty.set()

    def set_staples(self, staples: Mapping[str, tuple[str, bytes]]) -> None:
        """The OCSP responses to staple (host -> (sha1 of the host's served PEM, DER)); posted by the loop."""
        self.tls.want_staples(staples)
        self._dirty.set()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.paths.control),
                                                  timeout=aiohttp.ClientTimeout(total=5))
        return self._session

    async def push_once(self) -> bool:
        """Post what changed in the table (all of it after a start), then in the certificates
        and ACME answers; True if nginx took a table update."""
        posted = await self._push_routes()
        if self.tls.pending:
            try:
                await self.tls.push(self._client())
            except ProxyError as exc:
                self.stats.update_failures += 1
                self.last_error = str(exc)
                raise
        return posted

    async def _push_routes(self) -> bool:
        table, revision = self._want
        old = self._sent
        if old is not None and (old is table or old == table):
            self._cut_dead_hosts(None, table)  # (a node may have gone after its peers left)
            self._applied(revision)
            return False
        if old is None:
            self._generation += 1
        body = table_update(old, table, generation=self._generation)
        try:
            async with self._client().post("http://nginx/routes", data=body) as resp:
                answer = await resp.text()
                if resp.status != 200:
                    raise ProxyError(f"nginx refused the table update ({resp.status}): {answer.strip()}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.stats.update_failures += 1
            self.last_error = f"table update failed: {exc}"
            raise ProxyError(self.last_error) from exc
        self._sent = table
        self.stats.table_updates += 1
        self.last_error = ""
        self._cut_dead_hosts(old, table)
        self._applied(revision)
        return True

    def _cut_dead_hosts(self, old: Table | None, new: Table) -> None:
        """End nginx's connections to the peers of gone hosts (:class:`DeadHostCuts`)."""
        self._cuts.table_changed(old, new, live_hosts=self._live_hosts, master=self.pid)

    def _count_cut(self, killed: int) -> None:
        self.stats.cut += killed

    def _applied(self, revision: int) -> None:
        if revision > self.applied_revision:
            self.applied_revision = revision
            if self.acks is not None:
                self.acks.acknowledge(ROUTER, revision)

    async def refresh_stats(self) -> None:
        """Retries and ejections counted inside nginx (GET /routes)."""
        async with self._client().get("http://nginx/routes?stats=1") as resp:
            text = await resp.text()
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key in ("retries", "ejections", "handshakes") and value.isdigit():
                setattr(self.stats, key, int(value))

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        """Forever: push table changes as they come and keep nginx alive (and its orphan guard
        quiet: the heartbeat file is touched on every round)."""
        while True:
            self.master.beat()
            proc = self.master.proc
            if proc is None or proc.returncode is not None:
                await self._restart_after_exit()
                continue
            exit_wait = asyncio.ensure_future(proc.wait())
            dirty_wait = asyncio.ensure_future(self._dirty.wait())
            try:
                await asyncio.wait({exit_wait, dirty_wait}, return_when=asyncio.FIRST_COMPLETED,
                                   timeout=self.stats_every)
            finally:
                dirty_wait.cancel()
                if not exit_wait.done():
                    exit_wait.cancel()
            if proc.returncode is not None:
                continue
            if self._dirty.is_set():
                self._dirty.clear()
                try:
                    await self.push_once()
                except ProxyError as exc:
                    log.error("%s; retrying", exc)
                    self._dirty.set()
                    await asyncio.sleep(0.2)
            if time.monotonic() - self._stats_at >= self.stats_every:
                self._stats_at = time.monotonic()
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    await self.refresh_stats()

    async def _restart_after_exit(self) -> None:
        old = self.master.proc
        code = old.returncode if old is not None else None
        if old is not None:
            kill_group(old.pid)  # orphaned workers must not keep the port
        self._restart, delay = self.policy.on_exit(self._restart, now=time.monotonic(), rand=random.random())
        log.error("nginx exited (code %s); restarting in %.1fs", code, delay)
        await asyncio.sleep(delay)
        self.stats.restarts += 1
        try:
            await self._spawn()
            await self.master.guard()  # (the old master's guard ended with it)
            await self.push_once()  # the full table, before nginx lets requests through
        except ProxyError as exc:
            self.last_error = str(exc)
            self._dirty.set()  # the table goes in on the next round
            log.error("nginx restart failed: %s", exc)
