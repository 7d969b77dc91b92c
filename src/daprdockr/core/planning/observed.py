"""What the planner looks at (:class:`Observed`, captured by the reconciler at one moment) and the
few questions every part of the planner asks of it: is a record ours, is a key busy, which
nodes take instances, and when a time rule that held an action back runs out (:class:`Wake`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from daprdockr.core.containers import ContainerInfo
from daprdockr.core.instance_index import InstanceIndex
from daprdockr.core.names import ServiceName
from daprdockr.core.planning.actions import Key
from daprdockr.core.planning.rebalance import EvenCache
from daprdockr.core.records import Health, InstanceRecord, NodeRecord
from daprdockr.core.rollout import RolloutRecord, Slot
from daprdockr.core.state import BadKey


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    """Everything the planner looks at, captured by the reconciler at one moment."""

    node_id: str
    lease: int
    now: float
    instances: Mapping[Key, InstanceRecord]
    nodes: Mapping[str, NodeRecord]
    containers: Sequence[ContainerInfo]  # a LocalContainers lets a scoped pass look at its services' only
    busy: frozenset[Key] = frozenset()  # an action on the key is still running
    unowned_since: Mapping[Key, float] = field(default_factory=dict)
    retry_at: Mapping[Key, float] = field(default_factory=dict)  # no (re)start of the key before this
    held_until: Mapping[Key, float] = field(default_factory=dict)  # no action at all on the key before this
    capacity: int = 0
    claim_grace: float = 1.0
    claiming: bool = True  # False while settling after start or while the lease is uncertain
    frozen: frozenset[ServiceName] = frozenset()  # malformed spec, no good version known: hands off
    bad_instances: Mapping[Key, BadKey] = field(default_factory=dict)  # malformed keys: taken numbers
    health: Mapping[str, Health] = field(default_factory=dict)  # container id -> what its record should say
    restart: frozenset[str] = frozenset()  # containers unhealthy for longer than their check allows
    rollouts: Mapping[ServiceName, RolloutRecord] = field(default_factory=dict)
    slots: Mapping[ServiceName, Mapping[int, Slot]] = field(default_factory=dict)  # replacements in flight
    draining: frozenset[str] = frozenset()  # nodes that claim nothing and hand their instances over
    paused_since: Mapping[str, float] = field(default_factory=dict)  # container id -> first seen paused
    rebalance: bool = False  # this agent evens out services (--rebalance); needs ``wall``
    invalid: frozenset[ServiceName] = frozenset()  # services with a malformed spec or instance key
    wall: float = 0.0  # the wall-clock time (records' ``since``), for the rebalance cool-down
    # each desired service's numbers that nothing holds (only services with any); None: computed
    # here from ``desired`` (the state's per-event index, :attr:`ClusterState.unowned`, when given)
    unowned: Mapping[ServiceName, tuple[int, ...]] | None = None
    even: EvenCache | None = None  # remembers which services are even (rebalance), across passes
    # plan only these services' containers, records and rebalancing (None: all).  The reconciler
    # gives the services that changed since its last pass, when nothing else did
    # (:mod:`~daprdockr.core.planning.scope`); claims always look at every service with unowned numbers
    scope: frozenset[ServiceName] | None = None
    # claims this pass may still launch (None: no limit): the reconciler bounds the claims in
    # flight, so a pass over 100 000 unowned numbers plans a few dozen claims, not all of them
    claim_budget: int | None = None

    @property
    def index(self) -> InstanceIndex:
        """``instances`` by service, node and lease (indexed here if a plain mapping was given)."""
        return InstanceIndex.build(self.instances)

    @property
    def drain_me(self) -> bool:
        return self.node_id in self.draining


class Wake:
    """Collects the moments at which a time rule that held an action back runs out."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.at = float("inf")
        self.by_service: dict[ServiceName, float] = {}

    def after(self, moment: float, *, service: ServiceName) -> bool:
        """True if ``moment`` has come; else remember it as a wake-up time of ``service``."""
        if moment <= self.now:
            return True
        self.at = min(self.at, moment)
        if moment < self.by_service.get(service, float("inf")):
            self.by_service[service] = moment
        return False


def is_ours(rec: InstanceRecord, obs: Observed) -> bool:
    """A record is ours when it names this node, or is on our current lease whatever node it
    names (only garbage puts another node's name on our lease: it is rewritten as ours)."""
    return rec.node == obs.node_id or rec.lease == obs.lease


def is_busy(key: Key, obs: Observed, wake: Wake) -> bool:
    """An action on ``key`` is still running, or the key is held (a wake-up is noted for its end)."""
    return key in obs.busy or not wake.after(obs.held_until.get(key, 0.0), service=key[0])


def live_nodes(obs: Observed) -> list[str]:
    """The nodes that take instances: live and not draining (draining nodes are no spare capacity)."""
    return sorted((set(obs.nodes) | {obs.node_id}) - obs.draining)
