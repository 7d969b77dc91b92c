"""What this node's DNS and nginx serve: etcd's records, corrected by local knowledge.

etcd can lag (an outage, a write still in flight), but an agent always knows its own containers
from its own Docker engine.  :func:`local_view` therefore takes every record etcd has, and for
the records of *this* node's instances trusts the engine instead: an instance whose container is
not running (it crashed, or the agent is stopping it) is left out at once, and one whose
container was restarted is served on the container's current ports.  When an instance has two
containers (a rolling update starts the replacement beside the old one), the one the record names
is served.  Pure; linear in the number of this node's records (the state's per-node index),
and the records it corrects are copied into a new index that shares every other service's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from daprdockr.core.containers import ContainerInfo
from daprdockr.core.instance_index import IndexBuilder
from daprdockr.core.names import ServiceName
from daprdockr.core.state import ClusterState


def local_view(state: ClusterState, *, node_id: str, routable: Iterable[ContainerInfo]) -> ClusterState:
    """``state`` with this node's instance records matched to its ``routable`` (running) containers."""
    live: dict[tuple[ServiceName, int], list[ContainerInfo]] = {}
    for c in routable:
        live.setdefault(c.key, []).append(c)
    builder: IndexBuilder | None = None
    for key, rec in state.index.of_node(node_id).items():
        if rec.state != "running":
            continue
        candidates = live.get(key, [])
        # the container the record names; else (restarted under it) the newest.  A replacement
        # starting beside it (rolling update) is not served before the record names it.
        named = [x for x in candidates if x.id == rec.container_id]
        chosen = named[0] if named else max(candidates, key=lambda x: x.created, default=None)
        if chosen is not None and chosen.id == rec.container_id and chosen.ports == rec.ports:
            continue
        builder = builder or IndexBuilder.over(state.index)
        if chosen is None:
            builder.delete(key)
        else:
            builder.put(replace(rec, container_id=chosen.id, ports=chosen.ports))
    return state if builder is None else replace(state, instances=builder.snapshot())
