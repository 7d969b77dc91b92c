"""The HTTP routing table nginx's Lua balancer serves, and the updates that keep it current.  Pure.

:func:`routing_table` (kept per service by :class:`RoutingCache`) maps every ``http_host`` to the
peers (``address:published port``) of the running instances of its service (a frozen service,
whose spec is malformed, keeps the route of its newest stored version). The peers are *interleaved
across nodes* (one from each host in turn), so the few tries a request gets never all go to one
host that just died. A host whose service has no running instance maps to no peers (nginx answers
503); a host absent from the table gets 404. Two services claiming one host: the first by name
wins, as nginx's own ``server_name`` matching did.

:func:`table_update` encodes what changed between two tables (``set`` and ``del`` lines), or the
whole table after nginx (re)started (``full``); the agent posts it to the control socket and
nginx applies it without a reload.  :func:`removes_backends` tells whether applying the new
table took a peer out of service (the agent then publishes the etcd revision it applied, which
is what an owner waits for before it stops a container).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
from collections.abc import Mapping

from daprdockr.core.instance_index import changed_keys, changed_services
from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState

Table = dict[str, tuple[str, ...]]


@functools.lru_cache(maxsize=1 << 12)
def _host(address: str) -> str | None:
    """An address as a peer writes it (checked once per address: many peers share a host)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # not an IP literal: never handed to nginx
        return None
    return f"[{ip}]" if ip.version == 6 else str(ip)


def _peer(address: str, port: int) -> str | None:
    host = _host(address)
    return f"{host}:{port}" if host is not None else None


def _interleave(by_node: Mapping[str, list[str]]) -> tuple[str, ...]:
    columns = [sorted(peers) for _, peers in sorted(by_node.items())]
    out: list[str] = []
    for i in range(max((len(c) for c in columns), default=0)):
        out.extend(c[i] for c in columns if i < len(c))
    return tuple(out)


def route_of_service(state: ClusterState, name: ServiceName) -> tuple[str, int] | None:
    """``(http_host, http_port)`` of ``name``: its spec's, or a frozen service's newest stored one."""
    spec = state.services.get(name)
    if spec is not None and spec.http_host is not None and spec.http_port is not None:
        return spec.http_host, spec.http_port
    return state.frozen_routes.get(name)


def routes(state: ClusterState) -> dict[ServiceName, tuple[str, int]]:
    """``(http_host, http_port)`` of every service that has one, frozen services included (their
    route from the newest stored version: bad data never takes a route away)."""
    return {name: route for name in (*state.services, *state.frozen_routes)
            if (route := route_of_service(state, name)) is not None}


def is_option(token: str) -> bool:
    """A route's ``key=value`` option, not a peer."""
    return "=" in token


def routing_table(state: ClusterState) -> Table:
    """Every routed host and its options and running peers, interleaved across nodes."""
    return RoutingCache().table(state)


def _service_peers(state: ClusterState, name: ServiceName, port: int) -> tuple[str, ...]:
    peers: dict[str, list[str]] = {}  # node -> peers
    for rec in state.index.of_service(name).values():
        if not rec.routable:
            continue
        published = rec.port_for(port)
        peer = _peer(rec.address, published) if published is not None else None
        if peer is not None:
            peers.setdefault(rec.node, []).append(peer)
    return _interleave(peers)


def changed_specs(old: ClusterState, new: ClusterState) -> set[ServiceName]:
    """Services whose spec, frozen route or records differ between two states (compared by
    identity where the mirror shares objects, so it costs a look per service, not per instance)."""
    return (changed_services(old.index, new.index) | changed_keys(old.services, new.services)
            | changed_keys(old.frozen_routes, new.frozen_routes))


class RoutingCache:
    """:func:`routing_table` kept per service: a new state redoes only the services that changed
    (:func:`changed_specs`) and the hosts they claim or claimed."""

    def __init__(self) -> None:
        self._state: ClusterState | None = None
        self._routes: dict[ServiceName, tuple[str, int]] = {}
        self._claims: dict[str, set[ServiceName]] = {}  # host -> services that name it
        self._table: Table = {}

    def table(self, state: ClusterState) -> Table:
        """The table for ``state`` (a new dict; the one returned before is not changed)."""
        old = self._state
        if old is state:
            return self._table
        if old is None:
            names: set[ServiceName] = set(routes(state))
        else:
            names = changed_specs(old, state)
        self._state = state
        hosts: set[str] = set()
        for name in names:
            before = self._routes.pop(name, None)
            if before is not None:
                hosts.add(before[0])
                self._claims[before[0]].discard(name)
            route = route_of_service(state, name)
            if route is not None:
                self._routes[name] = route
                self._claims.setdefault(route[0], set()).add(name)
                hosts.add(route[0])
        if not hosts:
            return self._table
        table = dict(self._table)
        for host in hosts:
            claims = self._claims.get(host)
            if not claims:
                self._claims.pop(host, None)
                table.pop(host, None)
                continue
            winner = min(claims, key=str)
            spec = state.services.get(winner)
            options = spec.proxy.route_options() + spec.https.route_options() if spec is not None else ()
            table[host] = options + _service_peers(state, winner, self._routes[winner][1])
        self._table = table
        return table


def table_update(old: Table | None, new: Table, *, generation: int) -> bytes:
    """The body for the control endpoint: the changes from ``old`` to ``new``, or all of ``new``
    (``full``: nginx drops what it had) when ``old`` is None."""
    lines = [f"full {generation}"] if old is None else []
    base: Table = {} if old is None else old
    for host in sorted(new):
        if old is None or (base.get(host) is not new[host] and base.get(host) != new[host]):
            lines.append(" ".join(("set", host, *new[host])))
    lines.extend(f"del {host}" for host in sorted(set(base) - set(new)))
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _changed_hosts(old: Table, new: Table) -> list[str]:
    """Hosts whose entry is not the same (object) in ``new``: the tables :class:`RoutingCache`
    hands out share every entry that did not change."""
    return [host for host, peers in old.items() if new.get(host) is not peers]


def removed_peers(old: Table, new: Table) -> set[tuple[str, int]]:
    """The peers (address, port) served before and not now.  Only hosts whose entry changed, or
    that are new, are looked at: a peer is one instance's published port, so it belongs to one
    host's entry (a service that changed its host name moves its peers to the new one)."""
    hosts = _changed_hosts(old, new)
    before = {p for host in hosts for p in old[host] if not is_option(p)}
    if not before:
        return set()
    now = {p for host in (*hosts, *(h for h in new if h not in old)) for p in new.get(host, ()) if not is_option(p)}
    out = set()
    for peer in before - now:
        host, _, port = peer.rpartition(":")
        out.add((host.strip("[]"), int(port)))
    return out


def routed_removed(old: ClusterState, new: ClusterState) -> bool:
    """True when an instance routable in ``old`` is not routable at the same address and ports in
    ``new`` (looked at only in the services whose records changed)."""
    def served(state: ClusterState, name: ServiceName) -> set[tuple[int, str, tuple[tuple[str, int], ...]]]:
        return {(n, r.address, r.ports) for n, r in state.index.of_service(name).items() if r.routable}

    changed = changed_services(old.index, new.index)
    return any(served(old, name) - served(new, name) for name in changed)


def host_addresses(state: ClusterState) -> frozenset[str]:
    """The live nodes' addresses, written as peers write them (IP literals only)."""
    out = set()
    for node in state.nodes.values():
        with contextlib.suppress(ValueError):
            out.add(str(ipaddress.ip_address(node.address)))
    return frozenset(out)


def removes_backends(old: Table, new: Table) -> bool:
    """True when some peer served before is not served now (a removal to confirm)."""
    return any({p for p in old[host] if not is_option(p)} - set(new.get(host, ())) for host in _changed_hosts(old, new))
