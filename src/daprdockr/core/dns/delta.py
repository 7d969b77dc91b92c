"""What a DNS worker process is sent of a new state: the services that changed.  Pure.

A worker answers from a zone built from the services (their names) and the instance records;
:func:`zone_delta` takes from two states only the services whose spec or records differ (found
by identity, :func:`~daprdockr.core.routing.changed_specs`), and :func:`apply_zone_delta`
rebuilds the worker's state from its last one and the delta, copying only what changed.  The
first delta to a worker (``old`` None) is full.
"""

from __future__ import annotations

from dataclasses import dataclass

from daprdockr.core.instance_index import IndexBuilder
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from daprdockr.core.routing import changed_specs
from daprdockr.core.state import ClusterState


@dataclass(frozen=True, slots=True)
class ZoneDelta:
    revision: int
    full: bool  # the services below are all there is
    specs: dict[ServiceName, ServiceSpec | None]  # changed services: their spec (None: none now)
    records: dict[ServiceName, tuple[InstanceRecord, ...]]  # changed services: all their records now


def zone_delta(old: ClusterState | None, new: ClusterState) -> ZoneDelta:
    names = set(new.services) | set(new.index.by_service) if old is None else changed_specs(old, new)
    return ZoneDelta(revision=new.revision, full=old is None,
                     specs={name: new.services.get(name) for name in names},
                     records={name: tuple(new.index.of_service(name).values()) for name in names})


def apply_zone_delta(state: ClusterState, delta: ZoneDelta) -> ClusterState:
    """``state`` with the delta's services replaced (a full delta replaces everything)."""
    if delta.full:
        state = ClusterState()
    builder = IndexBuilder.over(state.index)
    services = dict(state.services)
    for name, spec in delta.specs.items():
        for number in list(state.index.of_service(name)):
            builder.delete((name, number))
        for rec in delta.records.get(name, ()):
            builder.put(rec)
        if spec is None:
            services.pop(name, None)
        else:
            services[name] = spec
    return ClusterState(services=services, instances=builder.snapshot(), revision=delta.revision)
