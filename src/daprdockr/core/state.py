"""Decoding a snapshot of the key space into typed cluster state.

:func:`decode_state` is pure: it gets raw ``(key, value, lease, revisions)`` tuples (from a range
read or replayed watch events) and returns a :class:`ClusterState`.  Garbage under the prefix
(bad JSON, wrong shape, a value over :data:`~daprdockr.core.jsondata.MAX_RECORD_BYTES`, an unknown
key layout, an instance key bound to no lease) is collected in ``skipped`` with the reason, never
raised: one bad key must not blind a reader to the rest of the cluster.

Bad data is never a reason to stop anything, so a malformed key is not the same as an absent one:

* a malformed service spec is listed in ``invalid_services``.  A reader that saw a good version
  of it before (the agent's mirror) passes that *last good* spec in and keeps planning with it;
  otherwise the service is *frozen*: nothing new starts, nothing stops.
* a malformed instance key is listed in ``invalid_instances`` with its lease and revisions: the
  number is taken (nobody claims it), its owner (the node on that lease) rewrites it, and a key
  on no lease is deleted with a compare on its revision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from daprdockr.core.bulk import gc_paused, loads
from daprdockr.core.instance_index import IndexBuilder, InstanceIndex
from daprdockr.core.jsondata import MAX_RECORD_BYTES
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord, NodeRecord
from daprdockr.core.rollout import HistoryEntry, RolloutRecord, Slot
from daprdockr.errors import ValidationError


@dataclass(frozen=True, slots=True)
class RawKV:
    key: str
    value: bytes
    lease: int = 0
    create_revision: int = 0
    mod_revision: int = 0


@dataclass(frozen=True, slots=True)
class BadKey:
    """A key whose value cannot be used, with what an agent needs to repair or delete it safely."""

    key: str
    reason: str
    lease: int = 0
    create_revision: int = 0
    mod_revision: int = 0
    node: str = ""  # the node the value names, if it names one (a lease-less key is left to it)


@dataclass(frozen=True, slots=True)
class ClusterState:
    """Everything the agent, DNS, nginx and the CLI need, at one etcd revision."""

    services: dict[ServiceName, ServiceSpec] = field(default_factory=dict)
    # an :class:`InstanceIndex` (a plain mapping given here is indexed once, in __post_init__)
    instances: Mapping[tuple[ServiceName, int], InstanceRecord] = field(default_factory=dict)
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    revision: int = 0
    skipped: tuple[tuple[str, str], ...] = ()
    invalid_services: dict[ServiceName, str] = field(default_factory=dict)
    invalid_instances: dict[tuple[ServiceName, int], BadKey] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)  # node -> routing revision it applied
    rollouts: dict[ServiceName, RolloutRecord] = field(default_factory=dict)
    slots: dict[ServiceName, dict[int, Slot]] = field(default_factory=dict)  # replacements in flight
    draining: frozenset[str] = frozenset()  # nodes with a drain marker
    history: dict[ServiceName, dict[int, HistoryEntry]] = field(default_factory=dict)  # kept spec versions
    # (http_host, http_port) of frozen services, from their newest history entry: a frozen
    # service keeps its route on every agent, also one that never saw a good version of the spec
    frozen_routes: dict[ServiceName, tuple[str, int]] = field(default_factory=dict)
    # service -> its desired numbers that no record and no malformed key holds (only services
    # with any); computed on first use unless the mirror, which keeps it per event, fills it in
    _unowned: dict[ServiceName, tuple[int, ...]] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.instances, InstanceIndex):
            object.__setattr__(self, "instances", InstanceIndex.build(self.instances))

    @property
    def index(self) -> InstanceIndex:
        """``instances`` with its per-service, per-node and per-lease views."""
        assert isinstance(self.instances, InstanceIndex)
        return self.instances

    def instances_of(self, name: ServiceName) -> list[InstanceRecord]:
        return [r for _, r in sorted(self.index.of_service(name).items())]

    def held_by(self, node_id: str) -> int:
        """How many instance keys ``node_id`` holds."""
        return self.index.held_by(node_id)

    @property
    def unowned(self) -> Mapping[ServiceName, tuple[int, ...]]:
        """Each service's desired instance numbers held by no record and no malformed key (only
        services that have any)."""
        if self._unowned is None:
            object.__setattr__(self, "_unowned", unowned_by_service(self.services, self.index, self.invalid_instances))
        assert self._unowned is not None
        return self._unowned

    @property
    def frozen(self) -> frozenset[ServiceName]:
        """Services whose spec is malformed and no good version of it is known: leave them be."""
        return frozenset(name for name in self.invalid_services if name not in self.services)


def unowned_numbers(
    spec: ServiceSpec, records: Mapping[int, InstanceRecord], bad: Mapping[tuple[ServiceName, int], BadKey]
) -> tuple[int, ...]:
    """``spec``'s desired numbers that neither ``records`` (its instances by number) nor a malformed key holds."""
    return tuple(n for n in range(1, spec.instances + 1) if n not in records and (spec.name, n) not in bad)


def unowned_by_service(
    services: Mapping[ServiceName, ServiceSpec], index: InstanceIndex, bad: Mapping[tuple[ServiceName, int], BadKey]
) -> dict[ServiceName, tuple[int, ...]]:
    """:func:`unowned_numbers` of every service that has any (a fresh count: linear)."""
    return {name: free for name, spec in services.items()
            if (free := unowned_numbers(spec, index.of_service(name), bad))}


@dataclass(frozen=True, slots=True)
class Marker:
    """A key whose presence is what matters (``drain/<node>``)."""

    kind: str
    node_id: str


@dataclass(frozen=True, slots=True)
class Keyed:
    """A record that belongs to a service key (rollout, slot, history entry)."""

    service: ServiceName
    number: int
    value: RolloutRecord | Slot | HistoryEntry


@dataclass(frozen=True, slots=True)
class Applied:
    """``applied/<node>``: the etcd revision whose removals the node's nginx and DNS applied."""

    node_id: str
    revision: int


def value_json(kv: RawKV) -> object:
    """The JSON of a value of at most MAX_RECORD_BYTES; raises ValidationError otherwise."""
    if len(kv.value) > MAX_RECORD_BYTES:
        raise ValidationError(f"value is {len(kv.value)} bytes, at most {MAX_RECORD_BYTES} allowed")
    try:
        return loads(kv.value)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValidationError(f"value is not JSON: {exc}") from exc


def decode_value(schema: KeySchema, kv: RawKV) -> Decoded:
    """Decode one key/value; raises ValidationError for anything malformed."""
    parsed = schema.parse(kv.key)
    if parsed is None:
        raise ValidationError("key does not match the schema")
    data = value_json(kv)
    if parsed.kind == "instance":
        assert parsed.service is not None
        rec = InstanceRecord.from_dict(data, service=parsed.service, number=parsed.number, lease=kv.lease,
                                       create_revision=kv.create_revision, mod_revision=kv.mod_revision)
        if not kv.lease:  # no agent's heartbeat keeps it: it would block the number forever
            raise ValidationError("instance key is bound to no lease")
        return rec
    if parsed.kind == "service":
        assert parsed.service is not None
        return ServiceSpec.from_dict(data, name=parsed.service)
    if parsed.kind == "drain":
        return Marker(kind="drain", node_id=parsed.node_id)
    if parsed.kind in ("rollout", "slot", "history"):
        assert parsed.service is not None
        value = (RolloutRecord.from_dict(data) if parsed.kind == "rollout"
                 else replace(Slot.from_dict(data), create_revision=kv.create_revision) if parsed.kind == "slot"
                 else HistoryEntry.from_dict(data))
        return Keyed(service=parsed.service, number=parsed.number, value=value)
    if parsed.kind == "applied":
        revision = data.get("revision") if isinstance(data, dict) else None
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
            raise ValidationError("must be {\"revision\": <non-negative integer>}", field="applied")
        return Applied(node_id=parsed.node_id, revision=revision)
    return replace(NodeRecord.from_dict(data, node_id=parsed.node_id, lease=kv.lease),
                   create_revision=kv.create_revision)


Decoded = ServiceSpec | InstanceRecord | NodeRecord | Applied | Marker | Keyed


def decode_entry(schema: KeySchema, kv: RawKV) -> Decoded | str:
    """:func:`decode_value`, with a malformed entry returned as its reason instead of raised."""
    try:
        return decode_value(schema, kv)
    except ValidationError as exc:
        return str(exc)


def assemble_state(
    schema: KeySchema,
    entries: Iterable[tuple[RawKV, Decoded | str]],
    *,
    revision: int = 0,
    last_good: Mapping[str, ServiceSpec] | None = None,
) -> ClusterState:
    """Typed state from already decoded ``(raw, value or skip reason)`` pairs.

    ``last_good`` maps a service key to the last valid spec seen under it: a malformed spec
    key then keeps that spec in ``services`` (and is still listed in ``invalid_services``).
    """
    services: dict[ServiceName, ServiceSpec] = {}
    records: list[InstanceRecord] = []  # (indexed at once at the end: the last of a key wins)
    nodes: dict[str, NodeRecord] = {}
    applied: dict[str, int] = {}
    rollouts: dict[ServiceName, RolloutRecord] = {}
    slots: dict[ServiceName, dict[int, Slot]] = {}
    history: dict[ServiceName, dict[int, HistoryEntry]] = {}
    draining: set[str] = set()
    skipped: list[tuple[str, str]] = []
    invalid_services: dict[ServiceName, str] = {}
    invalid_instances: dict[tuple[ServiceName, int], BadKey] = {}
    for kv, value in entries:
        if isinstance(value, InstanceRecord):  # (the most common value first)
            records.append(value)
        elif isinstance(value, str):
            skipped.append((kv.key, value))
            parsed = schema.parse(kv.key)
            if parsed is None or parsed.service is None:
                continue
            if parsed.kind == "service":
                invalid_services[parsed.service] = value
                good = (last_good or {}).get(kv.key)
                if good is not None:
                    services[good.name] = good
            elif parsed.kind == "instance":
                invalid_instances[(parsed.service, parsed.number)] = bad_instance(kv, value)
        elif isinstance(value, ServiceSpec):
            services[value.name] = value
        elif isinstance(value, Applied):
            applied[value.node_id] = value.revision
        elif isinstance(value, Marker):
            draining.add(value.node_id)
        elif isinstance(value, Keyed):
            if isinstance(value.value, RolloutRecord):
                rollouts[value.service] = value.value
            elif isinstance(value.value, Slot):
                slots.setdefault(value.service, {})[value.number] = value.value
            else:
                history.setdefault(value.service, {})[value.value.version] = value.value
        else:
            nodes[value.node_id] = value
    frozen_routes = {
        name: route for name in invalid_services if name not in services and name in history
        if (route := route_of(name, history[name][max(history[name])])) is not None
    }
    index = IndexBuilder()
    index.load(records)
    return ClusterState(
        services=services, instances=index.snapshot(), nodes=nodes, revision=revision, skipped=tuple(sorted(skipped)),
        invalid_services=invalid_services, invalid_instances=invalid_instances, applied=applied,
        rollouts=rollouts, slots=slots, draining=frozenset(draining), history=history,
        frozen_routes=frozen_routes,
    )


def bad_instance(kv: RawKV, reason: str) -> BadKey:
    """A malformed instance key, with what an agent needs to repair or delete it."""
    return BadKey(key=kv.key, reason=reason, lease=kv.lease, create_revision=kv.create_revision,
                  mod_revision=kv.mod_revision, node=_named_node(kv.value))


def _named_node(value: bytes) -> str:
    """The ``node`` a malformed instance value still names ("" if none can be read)."""
    try:
        data = loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ""
    node = data.get("node") if isinstance(data, dict) else None
    return node if isinstance(node, str) and len(node) <= 253 else ""


def route_of(name: ServiceName, entry: HistoryEntry) -> tuple[str, int] | None:
    """The HTTP route of a stored spec version, if it is valid and has one."""
    try:
        spec = ServiceSpec.from_dict(entry.spec, name=name)
    except ValidationError:
        return None
    if spec.http_host is None or spec.http_port is None:
        return None
    return spec.http_host, spec.http_port


def decode_state(schema: KeySchema, kvs: Iterable[RawKV], *, revision: int = 0) -> ClusterState:
    """Typed state from raw key/values; malformed entries are listed in ``skipped``."""
    with gc_paused():
        return assemble_state(schema, ((kv, decode_entry(schema, kv)) for kv in kvs), revision=revision)
