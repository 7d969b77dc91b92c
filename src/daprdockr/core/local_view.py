"""What this node's DNS and nginx serve: etcd's records, corrected by local knowledge.

etcd can lag (an outage, a write still in flight), but an agent always knows its own containers
from its own Docker engine.  :func:`local_view` therefore takes every record etcd has, and for
the records of *this* node's instances trusts the engine instead: an instance whose container is
not running (it crashed, or the agent is stopping it) is left out at once, and one whose
container was restarted is served on the container's current ports.  When an instance has two
containers (a rolling update starts the replacement beside the old one), the one the record names
is served.  Pure; linear in the number
of instance records.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from daprdockr.core.containers import ContainerInfo
from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState


def local_view(state: ClusterState, *, node_id: str, routable: Iterable[ContainerInfo]) -> ClusterState:
    """``state`` with this node's instance records matched to its ``routable`` (running) containers."""
    live: dict[tuple[ServiceName, int], list[ContainerInfo]] = {}
    for c in routable:
        live.setdefault(c.key, []).append(c)
    instances = dict(state.instances)
    changed = False
    for key, rec in state.instances.items():
        if rec.node != node_id or rec.state != "running":
            continue
        candidates = live.get(key, [])
        # the container the record names; else (restarted under it) the newest.  A replacement
        # starting beside it (rolling update) is not served before the record names it.
        named = [x for x in candidates if x.id == rec.container_id]
        chosen = named[0] if named else max(candidates, key=lambda x: x.created, default=None)
        if chosen is None:
            del instances[key]
            changed = True
        elif chosen.id != rec.container_id or chosen.ports != rec.ports:
            instances[key] = replace(rec, container_id=chosen.id, ports=chosen.ports)
            changed = True
    return replace(state, instances=instances) if changed else state
