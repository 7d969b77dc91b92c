"""What this node's DNS and nginx serve: etcd's records, corrected by local knowledge.

etcd can lag (an outage, a write still in flight), but an agent always knows its own containers
from its own Docker engine.  :func:`local_view` therefore takes every record etcd has, and for
the records of *this* node's instances trusts the engine instead: an instance whose container is
not running (it crashed, or the agent is stopping it) is left out at once, and one whose
container was restarted is served on the container's current ports.  Pure; linear in the number
of instance records.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from daprdockr.core.containers import ContainerInfo
from daprdockr.core.state import ClusterState


def local_view(state: ClusterState, *, node_id: str, routable: Iterable[ContainerInfo]) -> ClusterState:
    """``state`` with this node's instance records matched to its ``routable`` (running) containers."""
    live = {c.key: c for c in sorted(routable, key=lambda c: c.created)}  # newest wins on duplicates
    instances = dict(state.instances)
    changed = False
    for key, rec in state.instances.items():
        if rec.node != node_id or rec.state != "running":
            continue
        c = live.get(key)
        if c is None:
            del instances[key]
            changed = True
        elif c.id != rec.container_id or c.ports != rec.ports:
            instances[key] = replace(rec, container_id=c.id, ports=c.ports)
            changed = True
    return replace(state, instances=instances) if changed else state
