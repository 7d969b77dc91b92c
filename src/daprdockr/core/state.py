"""Decoding a snapshot of the key space into typed cluster state.

:func:`decode_state` is pure: it gets raw ``(key, value, lease, create_revision)`` tuples (from a
range read or replayed watch events) and returns a :class:`ClusterState`.  Garbage under the
prefix (bad JSON, wrong shape, unknown key layout) is collected in ``skipped`` with the reason,
never raised: one bad key must not blind a reader to the rest of the cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from daprdockr.core.keys import KeySchema
from daprdockr.core.model import InstanceRecord, NodeRecord, ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.errors import ValidationError


@dataclass(frozen=True, slots=True)
class RawKV:
    key: str
    value: bytes
    lease: int = 0
    create_revision: int = 0
    mod_revision: int = 0


@dataclass(frozen=True, slots=True)
class ClusterState:
    """Everything the agent, DNS, nginx and the CLI need, at one etcd revision."""

    services: dict[ServiceName, ServiceSpec] = field(default_factory=dict)
    instances: dict[tuple[ServiceName, int], InstanceRecord] = field(default_factory=dict)
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    revision: int = 0
    skipped: tuple[tuple[str, str], ...] = ()

    def instances_of(self, name: ServiceName) -> list[InstanceRecord]:
        return sorted(
            (r for (svc, _), r in self.instances.items() if svc == name), key=lambda r: r.number
        )


def decode_value(schema: KeySchema, kv: RawKV) -> ServiceSpec | InstanceRecord | NodeRecord:
    """Decode one key/value; raises ValidationError for anything malformed."""
    parsed = schema.parse(kv.key)
    if parsed is None:
        raise ValidationError("key does not match the schema")
    try:
        data = json.loads(kv.value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"value is not JSON: {exc}") from exc
    if parsed.kind == "service":
        assert parsed.service is not None
        return ServiceSpec.from_dict(data, name=parsed.service)
    if parsed.kind == "instance":
        assert parsed.service is not None
        rec = InstanceRecord.from_dict(
            data, service=parsed.service, number=parsed.number, lease=kv.lease
        )
        return replace(rec, create_revision=kv.create_revision)
    return NodeRecord.from_dict(data, node_id=parsed.node_id, lease=kv.lease)


Decoded = ServiceSpec | InstanceRecord | NodeRecord


def decode_entry(schema: KeySchema, kv: RawKV) -> Decoded | str:
    """:func:`decode_value`, with a malformed entry returned as its reason instead of raised."""
    try:
        return decode_value(schema, kv)
    except ValidationError as exc:
        return str(exc)


def assemble_state(entries: Iterable[tuple[str, Decoded | str]], *, revision: int = 0) -> ClusterState:
    """Typed state from already decoded ``(key, value or skip reason)`` pairs."""
    services: dict[ServiceName, ServiceSpec] = {}
    instances: dict[tuple[ServiceName, int], InstanceRecord] = {}
    nodes: dict[str, NodeRecord] = {}
    skipped: list[tuple[str, str]] = []
    for key, value in entries:
        if isinstance(value, str):
            skipped.append((key, value))
        elif isinstance(value, ServiceSpec):
            services[value.name] = value
        elif isinstance(value, InstanceRecord):
            instances[value.key_tuple] = value
        else:
            nodes[value.node_id] = value
    return ClusterState(
        services=services, instances=instances, nodes=nodes, revision=revision, skipped=tuple(skipped)
    )


def decode_state(schema: KeySchema, kvs: Iterable[RawKV], *, revision: int = 0) -> ClusterState:
    """Typed state from raw key/values; malformed entries are listed in ``skipped``."""
    return assemble_state(((kv.key, decode_entry(schema, kv)) for kv in kvs), revision=revision)
