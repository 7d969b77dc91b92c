"""The HTTP routing table nginx's Lua balancer serves, and the updates that keep it current.  Pure.

:func:`routing_table` maps every ``http_host`` to the peers (``address:published port``) of the
running instances of its service (a frozen service, whose spec is malformed, keeps the route of
its newest stored version).  The peers are *interleaved across nodes* (one from each host
in turn), so the few tries a request gets never all go to one host that just died.  A host whose
service has no running instance maps to no peers (nginx answers 503); a host absent from the
table gets 404.  Two services claiming one host: the first by name wins, as nginx's own
``server_name`` matching did.

:func:`table_update` encodes what changed between two tables (``set`` and ``del`` lines), or the
whole table after nginx (re)started (``full``); the agent posts it to the control socket and
nginx applies it without a reload.  :func:`removes_backends` tells whether applying the new
table took a peer out of service (the agent then publishes the etcd revision it applied, which
is what an owner waits for before it stops a container).
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Mapping

from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState

Table = dict[str, tuple[str, ...]]


def _peer(address: str, port: int) -> str | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # not an IP literal: never handed to nginx
        return None
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def _interleave(by_node: Mapping[str, list[str]]) -> tuple[str, ...]:
    columns = [sorted(peers) for _, peers in sorted(by_node.items())]
    out: list[str] = []
    for i in range(max((len(c) for c in columns), default=0)):
        out.extend(c[i] for c in columns if i < len(c))
    return tuple(out)


def routes(state: ClusterState) -> dict[ServiceName, tuple[str, int]]:
    """``(http_host, http_port)`` of every service that has one, frozen services included (their
    route from the newest stored version: bad data never takes a route away)."""
    out = dict(state.frozen_routes)
    for name, spec in state.services.items():
        if spec.http_host is not None and spec.http_port is not None:
            out[name] = (spec.http_host, spec.http_port)
    return out


def is_option(token: str) -> bool:
    """A route's ``key=value`` option, not a peer."""
    return "=" in token


def routing_table(state: ClusterState) -> Table:
    """Every routed host and its options and running peers, interleaved across nodes."""
    by_service = routes(state)
    peers: dict[ServiceName, dict[str, list[str]]] = {}  # service -> node -> peers (one pass)
    for (name, _), rec in state.instances.items():
        route = by_service.get(name)
        if route is None or not rec.routable:
            continue
        port = rec.port_for(route[1])
        peer = _peer(rec.address, port) if port is not None else None
        if peer is not None:
            peers.setdefault(name, {}).setdefault(rec.node, []).append(peer)
    table: Table = {}
    for name in sorted(by_service, key=str):
        host = by_service[name][0]
        if host not in table:
            spec = state.services.get(name)
            options = spec.proxy.route_options() if spec is not None else ()
            table[host] = options + _interleave(peers.get(name, {}))
    return table


def table_update(old: Table | None, new: Table, *, generation: int) -> bytes:
    """The body for the control endpoint: the changes from ``old`` to ``new``, or all of ``new``
    (``full``: nginx drops what it had) when ``old`` is None."""
    lines = [f"full {generation}"] if old is None else []
    base: Table = {} if old is None else old
    for host in sorted(new):
        if base.get(host) != new[host] or old is None:
            lines.append(" ".join(("set", host, *new[host])))
    lines.extend(f"del {host}" for host in sorted(set(base) - set(new)))
    return ("\n".join(lines) + "\n").encode() if lines else b""


def removed_peers(old: Table, new: Table) -> set[tuple[str, int]]:
    """The peers (address, port) served before and not now, on any host."""
    before = {p for peers in old.values() for p in peers if not is_option(p)}
    now = {p for peers in new.values() for p in peers if not is_option(p)}
    out = set()
    for peer in before - now:
        host, _, port = peer.rpartition(":")
        out.add((host.strip("[]"), int(port)))
    return out


def host_addresses(state: ClusterState) -> frozenset[str]:
    """The live nodes' addresses, written as peers write them (IP literals only)."""
    out = set()
    for node in state.nodes.values():
        with contextlib.suppress(ValueError):
            out.add(str(ipaddress.ip_address(node.address)))
    return frozenset(out)


def removes_backends(old: Table, new: Table) -> bool:
    """True when some peer served before is not served now (a removal to confirm)."""
    return any({p for p in peers if not is_option(p)} - set(new.get(host, ())) for host, peers in old.items())
