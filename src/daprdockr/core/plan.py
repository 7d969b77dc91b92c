"""The agent's pure planner: ``plan(desired, observed) -> actions``.

:func:`plan` does no I/O.  It compares the desired services with what etcd says about instance
ownership and what this node's Docker engine runs, and returns the actions that move this node
towards the desired state.  It is called on every change (level-triggered), so each action is
the next step only; the reconciler re-plans from fresh observations after every step.

Ownership.  Instance ``(service, n)`` belongs to whichever node holds its etcd key.  A key held
by this node on its *current* lease is *mine*; a key with our node id on an older lease (we
restarted faster than the TTL) is adopted by rewriting it on the current lease.

Spread rule (documented in README "Placement").  With ``L`` live nodes and a service wanting
``N`` instances, a node claims only while it holds fewer than ``ceil(N / L)`` instances of that
service (its *fair share*), and never beyond its ``capacity``.  Instance numbers are dealt
round-robin: number ``n`` is *preferred* by the node at index ``(n - 1) % L`` in the sorted list
of live nodes; unowned numbers are dealt (:func:`deal_unowned`) to their preferred node if it is
below its fair share, else to the next node in the ring that is, and the node dealt a number
claims it at once (so after a failover the lost numbers go straight to the nodes with room);
any other node below its fair share may claim it
once it has stayed unowned for ``claim_grace`` seconds (the preferred node is slow, failing,
or at capacity).  Because ``L * ceil(N / L) >= N`` every instance normally finds a node; one
that stays unowned for ``3 * claim_grace`` (other nodes at capacity) may be claimed by any node
beyond its fair share, so capacity limits never leave an instance unplaced.  A node that
joins later does not take healthy instances away from others (no rebalancing by default).

Scaling down releases the highest numbers first (numbers above ``instances``).  Containers of
this node whose key another node holds (split brain after a partition, or a restart slower than
the TTL) are stopped.

Rolling updates.  A running container of ours whose spec hash is not the spec's is replaced by
:class:`Roll` — only while the service's rollout is not paused, no slot holds a failed replacement
towards the same version (the rollout is about to be rolled back or paused), and fewer than
``update.parallel`` replacement slots are taken (the executor takes one with a transaction, so the
bound holds across the cluster).  A crashed container is restarted with the new spec at once (it serves nothing).

Drain.  A node with a drain marker claims and adopts nothing, releases instances it does not run,
and keeps running the rest until another node has taken them over: the nodes that are not draining
deal the draining node's running instances among themselves by the claim rule
(:func:`deal_unowned`), and the node dealt one starts it (:class:`TakeOver`), within the same slots.
When a key moves to another node, our container there is stopped only after its removal from
every router is confirmed (``Stop.removed_at``).  Draining nodes do not count as capacity.

Bad data stops nothing.  A *frozen* service (its spec is malformed and no good version is known)
gets no action at all: its containers and keys stay as they are.  A malformed instance key is a
taken number: nobody claims it and no container of it is stopped.  The node that runs its
container rebinds it to its lease from the container (:class:`Repair`, a compare on the key's
revision) if the key is on its lease or on none; a key nobody can use is deleted with a compare
on its revision (:class:`Purge`) by the node whose lease holds it, or, on no lease, by the node
it names (by any node if it names none that is live).  A well-formed record on our lease that
names another node is garbage too: it is rewritten (or released) as ours, never obeyed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from daprdockr.core.containers import ContainerInfo, LocalContainers
from daprdockr.core.instance_index import InstanceIndex, changed_keys
from daprdockr.core.model import Health, InstanceRecord, NodeRecord, ServiceSpec
from daprdockr.core.names import ServiceName, by_instance
from daprdockr.core.rebalance import EvenCache, rebalance_move
from daprdockr.core.rollout import RolloutRecord, Slot
from daprdockr.core.state import BadKey, unowned_by_service

Key = tuple[ServiceName, int]
# An instance nobody took for this many claim graces may be claimed beyond the fair share.
OVERFLOW_GRACE_FACTOR = 3.0


# --------------------------------------------------------------------------- actions
@dataclass(frozen=True, slots=True)
class Claim:
    """Race for an unowned instance; on a win, start its container."""

    key: Key
    spec: ServiceSpec


@dataclass(frozen=True, slots=True)
class Start:
    """(Re)start the container of an instance we own, replacing ``old`` if given."""

    record: InstanceRecord
    spec: ServiceSpec
    old: ContainerInfo | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Roll:
    """Replace our running container ``old`` of an instance with one of the new ``spec``, under
    the service's update policy (a replacement slot, start-first or stop-first, healthy for
    ``min_healthy`` within ``deadline``; on failure the rollout is rolled back or paused)."""

    record: InstanceRecord
    spec: ServiceSpec
    old: ContainerInfo


@dataclass(frozen=True, slots=True)
class TakeOver:
    """``record`` is held by a draining node (or by the node with the most of its service, when
    rebalancing): start the instance here (in a replacement slot) and, once healthy, move the key
    onto our lease; the other node then takes its container out."""

    record: InstanceRecord
    spec: ServiceSpec
    rebalancing: bool = False  # (else the holder is draining)


@dataclass(frozen=True, slots=True)
class Adopt:
    """A healthy container of ours whose key is unowned (``record`` None) or on an old lease."""

    container: ContainerInfo
    spec: ServiceSpec | None  # None: the service is frozen (kept as it is, whatever its spec)
    record: InstanceRecord | None = None


@dataclass(frozen=True, slots=True)
class Refresh:
    """Our container is fine but the etcd record is stale: rewrite it from the container."""

    record: InstanceRecord
    container: ContainerInfo


@dataclass(frozen=True, slots=True)
class Release:
    """Stop our container (if any) and delete our key: scaled down or service deleted."""

    record: InstanceRecord
    container: ContainerInfo | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop and remove a container of ours that we do not own (anymore)."""

    container: ContainerInfo
    reason: str = ""
    removed_at: int = 0  # it was routed until this etcd revision: confirm its removal first


@dataclass(frozen=True, slots=True)
class Repair:
    """Our lease holds a malformed value for this key: rewrite it from our running container."""

    key: Key
    bad: BadKey
    container: ContainerInfo


@dataclass(frozen=True, slots=True)
class Purge:
    """Delete an unusable instance key (malformed, or on no lease) if it is still unchanged."""

    key: Key
    bad: BadKey


Action = Claim | Start | Roll | TakeOver | Adopt | Refresh | Release | Stop | Repair | Purge


def action_key(action: Action) -> Key:
    """The instance an action is about (the reconciler runs one action per key at a time)."""
    if isinstance(action, Claim | Repair | Purge):
        return action.key
    if isinstance(action, Start | Roll | TakeOver | Refresh | Release):
        return action.record.key_tuple
    return action.container.key


# --------------------------------------------------------------------------- observations
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
    # gives the services that changed since its last pass, when nothing else did (:mod:`~daprdockr.core.plan_scope`);
    # claims always look at every service with unowned numbers
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


def fair_share(instances: int, live_nodes: int) -> int:
    """``ceil(instances / live_nodes)``, the most instances of one service a node should claim."""
    return math.ceil(instances / max(1, live_nodes))


def preferred_node(number: int, live: Sequence[str]) -> str:
    """The node that claims instance ``number`` first: round-robin over the sorted live nodes."""
    return live[(number - 1) % len(live)]


@dataclass(frozen=True, slots=True)
class Plan:
    """The actions to launch now, and when a time rule (claim grace, retry, hold) next changes
    the plan if nothing else happens before (``inf``: never)."""

    actions: list[Action]
    next_wake: float
    # the same per service: the moment a time rule next changes that service's plan (a pass
    # then plans the services whose moment came, not every service)
    wakes: Mapping[ServiceName, float] = field(default_factory=dict)


class _Wake:
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


def _ours(rec: InstanceRecord, obs: Observed) -> bool:
    """A record is ours when it names this node, or is on our current lease whatever node it
    names (only garbage puts another node's name on our lease: it is rewritten as ours)."""
    return rec.node == obs.node_id or rec.lease == obs.lease


def _busy(key: Key, obs: Observed, wake: _Wake) -> bool:
    return key in obs.busy or not wake.after(obs.held_until.get(key, 0.0), service=key[0])


def _container_ports_match(rec: InstanceRecord, c: ContainerInfo) -> bool:
    return rec.ports == c.ports and rec.container_id == c.id and rec.spec_hash == c.spec_hash


def _plan_containers(
    desired: Mapping[ServiceName, ServiceSpec], obs: Observed, out: list[Action], wake: _Wake
) -> set[Key]:
    """Actions for this node's containers; returns the keys they cover."""
    covered: set[Key] = set()
    by_key: dict[Key, list[ContainerInfo]] = {}
    listed = obs.containers
    if obs.scope is not None and isinstance(listed, LocalContainers):
        listed = listed.of(obs.scope)  # (indexed per listing: the scope's containers, not all of them)
    for c in listed:
        if c.node == obs.node_id and (obs.scope is None or c.service in obs.scope):
            by_key.setdefault(c.key, []).append(c)
    for key, group in sorted(by_key.items(), key=by_instance):
        covered.add(key)
        if _busy(key, obs, wake):
            continue
        if key[0] in obs.frozen:
            _keep_frozen(key, group, obs, out)
            continue
        bad = obs.bad_instances.get(key)
        if bad is not None:
            fix = _fix_bad_key(key, bad, group, obs)
            if fix is not None:
                out.append(fix)
            continue  # someone else's (or an old lease's) key: never stop a container over bad data
        # Keep the best candidate (running, the one our record names, newest); stop any duplicates
        # (a replacement left behind by a restart mid-rollout loses to the container it replaced).
        rec = obs.instances.get(key)
        named = rec.container_id if rec is not None and _ours(rec, obs) else ""
        group = sorted(group, key=lambda c: (c.running, c.id == named, c.created), reverse=True)
        c, extras = group[0], group[1:]
        out.extend(Stop(container=x, reason="duplicate container") for x in extras)
        spec = desired.get(c.service)
        wanted = spec is not None and c.number <= spec.instances
        if not wanted or spec is None:
            if rec is not None and _ours(rec, obs):
                out.append(Release(record=rec, container=c, reason="not desired"))
            else:
                out.append(Stop(container=c, reason="not desired"))
            continue
        if rec is None:
            if c.running and c.spec_hash == spec.runtime_hash and not obs.drain_me:
                if obs.claiming:
                    out.append(Adopt(container=c, spec=spec))
                # else our lease is uncertain (it expired while we were cut off, or we are settling
                # after a start): keep serving, and adopt once we can claim again
            else:
                out.append(Stop(container=c, reason="unclaimed and stale" if not obs.drain_me else "draining"))
            continue
        if not _ours(rec, obs):
            # another node holds the key (it took the instance over, or a split brain): our
            # container leaves every router first if it may still be routed
            out.append(Stop(container=c, reason=f"instance is held by node {rec.node}",
                            removed_at=rec.mod_revision if c.running else 0))
            continue
        _plan_own(rec, c, spec, obs, out, wake)
    return covered


def _plan_own(
    rec: InstanceRecord, c: ContainerInfo, spec: ServiceSpec, obs: Observed, out: list[Action], wake: _Wake
) -> None:
    """The action for our instance ``rec`` whose best container here is ``c``."""
    key = rec.key_tuple
    if not c.running:
        if obs.drain_me:
            out.append(Release(record=rec, container=c, reason="draining"))
        elif wake.after(obs.retry_at.get(key, 0.0), service=rec.service):
            out.append(Start(record=rec, spec=spec, old=c, reason="container exited"))
    elif rec.lease != obs.lease:
        out.append(Adopt(container=c, spec=spec, record=rec))
    elif c.paused:
        _plan_paused(rec, c, spec, obs, out, wake)
    elif c.spec_hash != spec.runtime_hash and may_roll(spec, obs):
        out.append(Roll(record=rec, spec=spec, old=c))
    elif c.id in obs.restart and c.spec_hash == spec.runtime_hash:
        out.append(Start(record=rec, spec=spec, old=c, reason="unhealthy"))
    elif (rec.state != "running" or not _container_ports_match(rec, c) or rec.node != obs.node_id
          or rec.health != obs.health.get(c.id, rec.health)):
        out.append(Refresh(record=rec, container=c))  # (a record on our lease naming another node: garbage)


def _plan_paused(
    rec: InstanceRecord, c: ContainerInfo, spec: ServiceSpec, obs: Observed, out: list[Action], wake: _Wake
) -> None:
    """Our container is paused (``docker pause``): its record says so (nothing serves it), and it is
    kept as it is (no restart, no rolling replacement) until it is unpaused, or until it has been
    paused for the spec's ``pause_limit`` (if any): then it is replaced."""
    since = obs.paused_since.get(c.id, obs.now)
    if spec.pause_limit and wake.after(since + spec.pause_limit, service=rec.service):
        out.append(Start(record=rec, spec=spec, old=c, reason=f"paused for longer than {spec.pause_limit:g}s"))
    elif rec.state != "paused" or not _container_ports_match(rec, c) or rec.node != obs.node_id:
        out.append(Refresh(record=rec, container=c))


def _fix_bad_key(key: Key, bad: BadKey, group: Sequence[ContainerInfo], obs: Observed) -> Action | None:
    """What this node does about a malformed (or lease-less) instance key, given its containers of
    that instance (``group``, maybe empty).  Never a stop: a running container of ours rebinds the
    key to our lease (a compare on its revision); a key nobody can use is deleted, by the node
    whose lease holds it, or, on no lease, by the node it names (anyone, if it names no live node)."""
    running = [c for c in group if c.running]
    if running and bad.lease in (0, obs.lease):
        return Repair(key=key, bad=bad, container=max(running, key=lambda c: c.created))
    if bad.lease == obs.lease or (not bad.lease and (bad.node == obs.node_id or bad.node not in obs.nodes)):
        return Purge(key=key, bad=bad)
    return None


def may_roll(spec: ServiceSpec, obs: Observed) -> bool:
    """A replacement of an outdated instance of ``spec`` may start: the rollout is not paused, no
    replacement towards this version has failed without the rollout being decided yet (its slot
    is marked failed until then), and a replacement slot looks free (taking it is a transaction;
    this only avoids hopeless tries)."""
    rollout = obs.rollouts.get(spec.name)
    if rollout is not None and rollout.target == spec.runtime_hash and rollout.state == "paused":
        return False
    slots = obs.slots.get(spec.name, {})
    if any(s.failed and s.target == spec.runtime_hash for s in slots.values()):
        return False
    return len(slots) < spec.update.parallel


def _keep_frozen(key: Key, group: Sequence[ContainerInfo], obs: Observed, out: list[Action]) -> None:
    """A frozen service's container is kept exactly as it is, and so is its key: nothing starts or
    stops, but a running container's key is still bound to our current lease (after a restart of
    this agent) so that it does not expire and get re-run elsewhere.  A container without a key is
    not given one (that would route it)."""
    if key in obs.bad_instances:
        return
    running = [c for c in group if c.running]
    if not running:
        return
    c = max(running, key=lambda c: c.created)
    rec = obs.instances.get(key)
    if rec is not None and rec.node == obs.node_id and rec.lease != obs.lease:
        out.append(Adopt(container=c, spec=None, record=rec))


def _plan_records(
    desired: Mapping[ServiceName, ServiceSpec], obs: Observed, covered: set[Key], out: list[Action], wake: _Wake
) -> None:
    """Actions for keys with our node id (or on our lease) but no container here."""
    index = obs.index
    if obs.scope is None:
        ours = {**index.of_node(obs.node_id), **index.of_lease(obs.lease)}
    else:  # (the scope's services only: a look at their records, not at all of ours)
        ours = {(name, n): r for name in obs.scope for n, r in index.of_service(name).items() if _ours(r, obs)}
    for key, rec in sorted(ours.items(), key=by_instance):
        if not _ours(rec, obs) or key in covered or rec.service in obs.frozen or _busy(key, obs, wake):
            continue
        spec = desired.get(rec.service)
        if spec is None or rec.number > spec.instances:
            out.append(Release(record=rec, reason="not desired"))
        elif obs.drain_me:  # nothing runs it here: let another node claim it
            out.append(Release(record=rec, reason="draining"))
        elif wake.after(obs.retry_at.get(key, 0.0), service=rec.service):
            out.append(Start(record=rec, spec=spec, reason="no container"))


def deal_unowned(numbers: Sequence[int], *, live: Sequence[str], room: Mapping[str, int]) -> dict[int, str]:
    """Deal unowned instance ``numbers`` to nodes below their fair share.

    Number ``n`` goes to its preferred node (``preferred_node``) when that node has room, else
    to the next node in the sorted ring that has room; ``room`` is each node's fair share minus
    what it holds.  Every agent computes the same table from the same etcd state, so after a
    failover the lost numbers go straight to the nodes with room instead of waiting for the
    claim grace.  Numbers left over (no room anywhere) are absent from the result.
    """
    left = {node: max(0, room.get(node, 0)) for node in live}
    dealt: dict[int, str] = {}
    for n in sorted(numbers):
        start = live.index(preferred_node(n, live))
        for i in range(len(live)):
            node = live[(start + i) % len(live)]
            if left[node] > 0:
                dealt[n] = node
                left[node] -= 1
                break
    return dealt


def _plan_claims(
    desired: Mapping[ServiceName, ServiceSpec], obs: Observed, covered: set[Key], out: list[Action], wake: _Wake
) -> None:
    """Claims for unowned instance numbers, within fair share and capacity; purges of unusable keys."""
    for key, bad in sorted(obs.bad_instances.items(), key=by_instance):
        if key in covered or key[0] in obs.frozen or _busy(key, obs, wake):
            continue  # (keys with containers here were decided with them)
        fix = _fix_bad_key(key, bad, (), obs)
        if fix is not None:
            out.append(fix)
    budget = obs.claim_budget
    if not obs.claiming or obs.drain_me or budget == 0:
        return
    live = _live(obs)
    index = obs.index
    adopting = {action_key(a) for a in out if isinstance(a, Adopt)}
    held_total = index.held_by(obs.node_id) + len(adopting)
    unowned = obs.unowned if obs.unowned is not None else unowned_by_service(desired, index, obs.bad_instances)
    # Two rounds over the services: first the numbers the deal gives this node, then (after the
    # claim grace) the ones dealt to others that are still unowned.  With a budget, a node claims
    # its own share everywhere before it competes for anyone else's: while a large service
    # converges the nodes do not race each other for the same numbers.
    held_now: dict[ServiceName, int] = {}
    deals: list[tuple[ServiceName, ServiceSpec, int, list[int], dict[int, str]]] = []
    # (the services with a key busy, held or being adopted: the others' numbers are all claimable)
    watched = {key[0] for keys in (obs.busy, obs.held_until, adopting) for key in keys}
    for name in sorted((n for n in unowned if n in desired), key=str):  # (a service with none has nothing to claim)
        spec = desired[name]
        holders = _holders(index.of_service(name), instances=spec.instances, keep=2 * len(desired) + 64)
        holders[obs.node_id] += sum(1 for (svc, _) in adopting if svc == name)
        held_now[name] = holders[obs.node_id]
        share = fair_share(spec.instances, len(live))
        numbers = ([n for n in unowned[name] if (name, n) not in adopting and not _busy((name, n), obs, wake)]
                   if name in watched else list(unowned[name]))
        dealt = deal_unowned(numbers, live=live, room={node: share - holders[node] for node in live})
        deals.append((name, spec, share, numbers, dealt))
        if budget is not None and sum(1 for n in numbers if dealt.get(n) == obs.node_id) >= budget:
            break  # (this node's own numbers so far fill the budget: no need to deal the rest)
    for own in (True, False):
        for name, spec, share, numbers, dealt in deals:
            for n in numbers:
                if (dealt.get(n) == obs.node_id) != own:
                    continue
                key = (name, n)
                if obs.capacity and held_total >= obs.capacity:
                    return
                since = obs.unowned_since.get(key, obs.now)
                if held_now[name] >= share and not wake.after(since + OVERFLOW_GRACE_FACTOR * obs.claim_grace,
                                                              service=name):
                    continue
                if own or wake.after(since + obs.claim_grace, service=name):
                    out.append(Claim(key=key, spec=spec))
                    held_now[name] += 1
                    held_total += 1
                    if budget is not None:
                        budget -= 1
                        if budget <= 0:
                            return


_HOLDERS: dict[int, tuple[Mapping[int, InstanceRecord], int, Counter[str]]] = {}


def _holders(records: Mapping[int, InstanceRecord], *, instances: int, keep: int) -> Counter[str]:
    """How many of the numbers 1..``instances`` each node holds in one service's ``records``.
    Remembered per records mapping (an index snapshot never changes one, and shares an unchanged
    service's), so a pass counts again only the services whose records changed; the ``keep``
    newest are kept (the oldest go first: a changed service's old mapping is not looked up again)."""
    hit = _HOLDERS.get(id(records))
    if hit is not None and hit[0] is records and hit[1] == instances:
        return Counter(hit[2])
    counts = Counter(r.node for r in records.values() if r.number <= instances)
    while len(_HOLDERS) >= keep:
        del _HOLDERS[next(iter(_HOLDERS))]
    _HOLDERS[id(records)] = (records, instances, counts)
    return Counter(counts)


def _live(obs: Observed) -> list[str]:
    """The nodes that take instances: live and not draining (draining nodes are no spare capacity)."""
    return sorted((set(obs.nodes) | {obs.node_id}) - obs.draining)


def _plan_handoffs(
    desired: Mapping[ServiceName, ServiceSpec], obs: Observed, out: list[Action], wake: _Wake
) -> None:
    """Take over instances of draining nodes: each goes to the node the deal gives it (the same
    rule as unowned numbers, among the nodes that are not draining), at most ``update.parallel``
    moves of one service at a time (the replacement slots)."""
    if not obs.claiming or obs.drain_me or not obs.draining:
        return
    live = _live(obs)
    index = obs.index
    desired_here = [r for r in index.of_node(obs.node_id).values()
                    if (spec := desired.get(r.service)) is not None and r.number <= spec.instances]
    held_total = len(desired_here)
    moving: dict[ServiceName, list[InstanceRecord]] = {}
    for node in obs.draining:
        for r in index.of_node(node).values():
            spec = desired.get(r.service)
            if spec is not None and r.number <= spec.instances and r.state == "running":
                moving.setdefault(r.service, []).append(r)
    holders: dict[ServiceName, Counter[str]] = {
        name: Counter(r.node for r in index.of_service(name).values()
                      if r.number <= desired[name].instances and r.node not in obs.draining)
        for name in moving}
    for name in sorted(moving, key=str):
        spec = desired[name]
        free = spec.update.parallel - len(obs.slots.get(name, {}))
        share = fair_share(spec.instances, len(live))
        counts = holders.get(name, Counter())
        by_number = {r.number: r for r in moving[name]}
        dealt = deal_unowned(sorted(by_number), live=live, room={n: share - counts[n] for n in live})
        for number, node in sorted(dealt.items()):
            if free <= 0 or (obs.capacity and held_total >= obs.capacity):
                break
            if node != obs.node_id or _busy((name, number), obs, wake):
                continue
            out.append(TakeOver(record=by_number[number], spec=spec))
            free -= 1
            held_total += 1


def _plan_rebalance(
    desired: Mapping[ServiceName, ServiceSpec], obs: Observed, out: list[Action], wake: _Wake
) -> None:
    """Take over one instance of a settled service from the node with the most of it, when this
    node has the fewest (:mod:`daprdockr.core.rebalance`)."""
    if not obs.rebalance or not obs.claiming or obs.drain_me or out:
        return  # (anything else to do comes first: a move waits for a quiet pass)
    live = _live(obs)
    if len(live) < 2:
        return
    index = obs.index
    held_total = {node: len(held) for node, held in index.by_node.items()}
    capacity = {n: rec.capacity for n, rec in obs.nodes.items()}
    capacity[obs.node_id] = obs.capacity
    even = obs.even or EvenCache()
    names = desired if obs.scope is None else {n for n in (*obs.scope, *even.uneven) if n in desired}
    for name in sorted(names, key=str):
        if name in obs.frozen or name in obs.invalid:
            continue  # (bad data in etcd is never a reason to move anything)
        spec = desired[name]
        records = index.of_service(name)
        if even.even(spec, records, nodes=live):
            continue  # (no move evens out a service whose nodes differ by one at most)
        move = rebalance_move(spec, records.values(), nodes=live, held_total=held_total, capacity=capacity,
                              slots_taken=len(obs.slots.get(name, {})), wall_now=obs.wall)
        if move is not None and move.to == obs.node_id and not _busy(move.record.key_tuple, obs, wake):
            out.append(TakeOver(record=move.record, spec=spec, rebalancing=True))
            return  # one move at a time per node


def plan_next(desired: Mapping[ServiceName, ServiceSpec], observed: Observed) -> Plan:
    """The next actions for this node, and when to plan again.  Pure: no I/O, no clock
    (``observed.now`` is the time).

    At most one action per instance key; keys in ``observed.busy`` (an action still running)
    or held (``observed.held_until``) are left alone.
    """
    out: list[Action] = []
    wake = _Wake(observed.now)
    covered = _plan_containers(desired, observed, out, wake)
    _plan_records(desired, observed, covered, out, wake)
    _plan_claims(desired, observed, covered, out, wake)
    _plan_handoffs(desired, observed, out, wake)
    _plan_rebalance(desired, observed, out, wake)
    return Plan(actions=out, next_wake=wake.at, wakes=wake.by_service)


def plan(desired: Mapping[ServiceName, ServiceSpec], observed: Observed) -> list[Action]:
    """:func:`plan_next`'s actions."""
    return plan_next(desired, observed).actions


def track_unowned_since(
    since: dict[Key, float], *, seen: Mapping[ServiceName, tuple[int, ...]],
    unowned: Mapping[ServiceName, tuple[int, ...]], now: float,
) -> None:
    """Bring ``since`` (each unowned key -> when it was first seen unowned) from ``seen`` to
    ``unowned`` (the state's per-service unowned numbers, shared while unchanged): only the
    services whose numbers changed are looked at."""
    for name in changed_keys(seen, unowned):
        before, after = seen.get(name, ()), unowned.get(name, ())
        for n in set(before).difference(after):
            since.pop((name, n), None)
        for n in after:
            since.setdefault((name, n), now)


def unowned_keys(
    desired: Mapping[ServiceName, ServiceSpec],
    instances: Mapping[Key, InstanceRecord],
    taken: Mapping[Key, BadKey] | None = None,
) -> set[Key]:
    """Instance keys that are desired but held by no node (pure helper for grace tracking)."""
    unowned = unowned_by_service(desired, InstanceIndex.build(instances), taken or {})
    return {(name, n) for name, numbers in unowned.items() for n in numbers}
