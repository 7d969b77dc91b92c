"""The reconcile loop: level-triggered, one worker per instance key.

Events (etcd watch, Docker events, heartbeat changes, a finished action) only call
:meth:`Reconciler.mark_dirty`.  :meth:`Reconciler.reconcile_once` then re-reads what it needs
(this node's containers from Docker, the cluster state from the etcd mirror), asks the pure
planner (:func:`daprdockr.core.plan.plan`) for actions and runs each instance key's actions in
a task of its own, so a slow image pull or container stop never blocks other instances.  Keys
with a running task are reported to the planner as *busy* and left alone until it finishes,
which then marks the loop dirty again.

etcd writes per started instance: the claim (create-if-absent on our lease, state
``starting``) and one update to ``running`` with container id and published ports.

Release before stop, confirmed: an instance leaves service in etcd first (its key is deleted, or
marked ``starting`` before a replacement); then, if it was routed, the reconciler waits until
every live agent has applied that etcd revision to its nginx and DNS (``confirm_removal``,
bounded), lets its connections drain (bounded), and only then stops the container.  While etcd
is unreachable the container keeps running.  A container that crashed is restarted
without waiting for etcd: started again as it is (``docker start``) while it is the spec's and not
in a crash loop, else replaced; one Docker cannot remove goes to the background reaper
(:mod:`daprdockr.adapters.container_reaper`) and never holds its instance up.  A container whose
key another node now holds is confirmed out of the routes at the revision that took it out, read
from the key's history (:mod:`daprdockr.core.removal`).  Containers being stopped and this node's running containers are
published through :meth:`Reconciler.routable` so the agent's own DNS and nginx follow them at
once (see :mod:`daprdockr.core.local_view`).  That list is the last Docker listing plus every
container this node started since the listing began (:meth:`Reconciler.observe_started`), so an
instance is served here as soon as its record says ``running``, not only after the next listing.

Rolling updates and drain (:class:`~daprdockr.core.plan.Roll`, :class:`~daprdockr.core.plan.TakeOver`).
A replacement first takes one of the service's ``update.parallel`` slots in etcd (a transaction on
our lease, released after; a dead agent's slot frees itself with its lease). Start-first: the new
container starts beside the old one, must pass its check (or just keep running, without one) for
``min_healthy`` within ``deadline``, then one write points the instance at it and the old one is
taken out (confirmed removal, drain, stop); meanwhile the old container's health changes are still
written (the key is busy, so no Refresh would). Stop-first: the old one is taken out first, and the
record names the new one at once but as ``starting`` (not routed) until it has passed its check, or
without one kept running, for ``min_healthy``. The deadline covers the start too: a replacement that
cannot start (refused, or failing :data:`START_ATTEMPTS` times, e.g. a missing image tag) or does
not get healthy in time is removed, its slot is marked failed (the planner starts no replacement
towards that version meanwhile), and the rollout fails over to :class:`RolloutCoordinator` (rollback
or pause; the first agent to report it decides). Every release compares the slot's create revision
(never another agent's slot), and each pass releases this node's slots that no replacement task
holds (a release that failed, a take that committed although its reply was lost, a failure that
could not be reported yet: it is reported first). A replacement in flight stops early
(:class:`ReplacementAbandoned`, nothing reported) when the spec moved on, a start-first rollout was
paused, or our lease was replaced. A takeover starts a draining node's instance (or, rebalancing,
one of the node with the most of a service: :mod:`daprdockr.core.rebalance`) here the same way
and then moves the key onto our lease with a compare on the revision it read; a rebalancing one
is abandoned when the service gets malformed data in etcd.

Every key has one :class:`~daprdockr.core.retry.KeyRetry` entry: crash-restart backoff (reset
after a healthy run, with jitter) and a hold after a failed action, so no key is retried hot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from daprdockr.adapters.container_reaper import ContainerReaper
from daprdockr.adapters.docker_runtime import ContainerRuntime
from daprdockr.core.containers import ContainerInfo, LocalContainers
from daprdockr.core.health import PerContainerHealth
from daprdockr.core.mirror import StateMirror, WatchEvent
from daprdockr.core.model import Health, InstanceRecord, ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.plan import (
    Action,
    Adopt,
    Claim,
    Key,
    Observed,
    Purge,
    Refresh,
    Release,
    Repair,
    Roll,
    Start,
    Stop,
    TakeOver,
    action_key,
    plan_next,
    track_unowned_since,
)
from daprdockr.core.plan_scope import PassInputs, plan_scope
from daprdockr.core.prometheus import Histogram
from daprdockr.core.rebalance import EvenCache
from daprdockr.core.removal import KeyEvent, left_routing_at
from daprdockr.core.retry import KeyRetries, KeyRetry, RetryPolicy
from daprdockr.core.rollout import Slot
from daprdockr.core.state import ClusterState
from daprdockr.errors import ContainerError, DaprDockrError, RuntimeUnavailableError, StoreError

log = logging.getLogger(__name__)


class InstanceStore(Protocol):
    """The part of :class:`~daprdockr.adapters.etcd_store.EtcdStore` the reconciler uses.

    Each write returns the event it produced (``None``: the compare failed, the key is not ours).
    """

    async def claim_instance(self, rec: InstanceRecord, *, lease: int) -> WatchEvent | None: ...

    async def update_instance(self, rec: InstanceRecord, *, lease: int) -> WatchEvent | None: ...

    async def release_instance(self, rec: InstanceRecord) -> WatchEvent | None: ...

    async def purge_instance(self, *, key: str, mod_revision: int) -> WatchEvent | None: ...

    async def instance_history(self, service: ServiceName, number: int, *, until: int) -> list[KeyEvent]: ...

    async def take_over_instance(self, rec: InstanceRecord, *, lease: int) -> WatchEvent | None: ...


class RolloutCoordinator(Protocol):
    """Replacement slots and rollout failure (:class:`~daprdockr.adapters.lifecycle_store.LifecycleStore`)."""

    async def take_slot(self, name: ServiceName, *, parallel: int, slot: Slot, lease: int) -> tuple[int, int]: ...

    async def mark_slot_failed(self, name: ServiceName, index: int, *, slot: Slot, lease: int) -> bool: ...

    async def release_slot(self, name: ServiceName, index: int, *, create_revision: int) -> bool: ...

    async def fail_rollout(self, name: ServiceName, *, target: str, reason: str, rollback: bool) -> str: ...


class _Uncoordinated:
    """A single node without etcd coordination (unit tests): every replacement gets a slot."""

    async def take_slot(self, name: ServiceName, *, parallel: int, slot: Slot, lease: int) -> tuple[int, int]:
        return 1, 1

    async def mark_slot_failed(self, name: ServiceName, index: int, *, slot: Slot, lease: int) -> bool:
        return True

    async def release_slot(self, name: ServiceName, index: int, *, create_revision: int) -> bool:
        return True

    async def fail_rollout(self, name: ServiceName, *, target: str, reason: str, rollback: bool) -> str:
        return ""


def invalid_services(state: ClusterState) -> frozenset[ServiceName]:
    """Services with a malformed spec or instance key in etcd."""
    return frozenset(state.invalid_services) | frozenset(name for name, _ in state.invalid_instances)


async def _no_confirmation(revision: int) -> None:
    return None


# claims in flight at once: a pass over many unowned numbers (a large service written) plans
# this many, not all of them, so a pass stays short and the event loop keeps the lease alive
MAX_CLAIMS_IN_FLIGHT = 32
PACE_ABOVE = 0.002  # seconds: a pass longer than this is followed by a pause as long (at most PACE_MAX)
RELIST_PACE = 4.0  # a stale listing waits 4 times as long as the last one took (listing <= 20% of the time)
PACE_MAX = 0.25
START_ATTEMPTS = 3  # failed starts that fail a replacement (within its deadline)
START_RETRY = 0.5  # seconds before the next start of a replacement, times the failures so far
START_AGAIN_FOR = 30.0  # seconds of docker starts failing on an unreachable engine before a container is replaced
START_AGAIN_REFUSED = 3.0  # seconds of docker starts refused by an answering engine before a container is replaced
START_AGAIN_LOOP = 2  # quick exits in a row that an exited container is started again as it is for


class ReplacementFailed(ContainerError):
    """A replacement did not start, or not get healthy, within its deadline: the new version
    fails here (the rollout is rolled back or paused)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"replacement failed: {reason}", transient=True)
        self.reason = reason


class ReplacementAbandoned(ContainerError):
    """A replacement stopped early, through no fault of the new version: the spec moved on (a
    rollback, a newer change), a start-first rollout was paused, or our lease (and with it the
    slot) was replaced.  Nothing is reported; the key is planned afresh."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"replacement abandoned: {reason}", transient=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Job:
    """One replacement in flight: the slot it holds (taken on ``lease``) and its deadline (event
    loop time), which covers both the start and getting healthy (for stop-first, from when the
    old container is out)."""

    spec: ServiceSpec
    index: int
    slot: Slot
    lease: int
    deadline: float
    rollout: bool  # a rolling update (a failure fails the rollout), not a takeover
    rebalancing: bool = False  # a takeover that evens the service out (abandoned on bad data)


class HealthSource(Protocol):
    """What the reconciler needs from the health checks (:mod:`daprdockr.health`)."""

    def health_of(self, container: ContainerInfo, spec: ServiceSpec) -> Health | None:
        """"" without a check, the container's status, or None while unknown (keep the record's)."""

    def observed(
        self, containers: LocalContainers, specs: Mapping[ServiceName, ServiceSpec],
    ) -> tuple[Mapping[str, Health], frozenset[str]]:
        """Each serving container's health for its record (unknown ones left out), and the
        containers due for an unhealthy restart (:class:`~daprdockr.core.health.PerContainerHealth`)."""

    async def probe(self, container: ContainerInfo, spec: ServiceSpec) -> bool: ...


class _NoChecks(PerContainerHealth):
    def __init__(self) -> None:
        self._seen: tuple[LocalContainers, Mapping[str, Health]] | None = None

    def health_of(self, container: ContainerInfo, spec: ServiceSpec) -> Health | None:
        return ""

    def restart_due(self, container: ContainerInfo, spec: ServiceSpec) -> bool:
        return False

    def observed(
        self, containers: LocalContainers, specs: Mapping[ServiceName, ServiceSpec],
    ) -> tuple[Mapping[str, Health], frozenset[str]]:
        if self._seen is None or self._seen[0] is not containers:  # ("" whatever the spec: once per listing)
            self._seen = (containers, {c.id: "" for c in containers if c.serving})
        return self._seen[1], frozenset()

    async def probe(self, container: ContainerInfo, spec: ServiceSpec) -> bool:
        return True


class Reconciler:
    def __init__(
        self,
        *,
        node_id: str,
        address: str,
        store: InstanceStore,
        runtime: ContainerRuntime,
        mirror: StateMirror,
        capacity: int = 0,
        claim_grace: float = 1.0,
        stop_timeout: float = 5.0,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        on_local_change: Callable[[], None] = lambda: None,
        on_written: Callable[[WatchEvent], object] = lambda ev: None,
        confirm_removal: Callable[[int], Awaitable[None]] | None = None,
        drain_timeout: float = 5.0,
        health: HealthSource | None = None,
        rollouts: RolloutCoordinator | None = None,
    ) -> None:
        self.node_id = node_id
        self.address = address
        self.store = store
        self.runtime = runtime
        self.mirror = mirror
        self.capacity = capacity
        self.claim_grace = claim_grace
        self.stop_timeout = stop_timeout
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.rand = rand
        self.on_local_change = on_local_change
        self.on_written = on_written  # read-your-writes: each confirmed write's event, to the mirror
        self.confirm_removal = confirm_removal or _no_confirmation  # waits until every agent applied a revision
        self.drain_timeout = drain_timeout
        self.health: HealthSource = health or _NoChecks()
        self.rollouts: RolloutCoordinator = rollouts or _Uncoordinated()
        self.slot_retry = 0.25  # seconds before trying again after losing the race for a slot
        self._released_slots: set[int] = set()  # create revisions of slots we deleted (the mirror may lag)
        self._slot_task: asyncio.Task[None] | None = None
        self.lease = 0
        self._claiming = False  # the agent enables claims once the node settled
        self.rebalance = False  # even out services across the nodes (the agent's --rebalance)
        self.dirty = asyncio.Event()
        self._next_wake = float("inf")  # when a claim grace or a retry backoff runs out
        self._wakes: dict[ServiceName, float] = {}  # the same per service (the services a pass must plan then)
        self._inflight: dict[Key, asyncio.Task[None]] = {}
        self._unowned_since: dict[Key, float] = {}
        self._unowned_seen: Mapping[ServiceName, tuple[int, ...]] = {}  # the unowned numbers it was kept from
        self._claims: set[Key] = set()  # keys whose claim is in flight (at most MAX_CLAIMS_IN_FLIGHT)
        self.retries: KeyRetries[Key] = KeyRetries()
        self.containers = LocalContainers()
        # self.containers less the reaper's, indexed per service, and what is routable: kept per
        # listing (rebuilt when the list, the reaper or the stopping set changes), not per pass
        self._local: tuple[LocalContainers, frozenset[str], LocalContainers] | None = None  # (source, reaped, result)
        self._routable: tuple[LocalContainers, dict[str, ServiceName], LocalContainers] | None = None  # (, stopping, )
        self.listed = False  # containers were listed at least once (routable() means something)
        self._stopping: dict[str, ServiceName] = {}  # containers being stopped (id -> service): no longer routable
        self._paused_since: dict[str, float] = {}  # container id -> when a listing first showed it paused
        self._paused_of: tuple[LocalContainers, LocalContainers] | None = None  # (listing, its paused ones)
        self._even = EvenCache()  # services the last passes found even (no rebalance move), per spec and records
        self._planned: ClusterState | None = None  # the state the last pass planned from
        self._last_inputs: PassInputs | None = None  # and the rest of what it read
        self._last_full = 0.0  # when the last pass over every service ran
        # containers Docker could not remove: retried in the background, never in an instance's way
        self.reaper = ContainerReaper(remove=self._remove_for_good)
        self._exits_counted: set[str] = set()  # exited containers whose exit the crash backoff counted
        self._start_again_failing: dict[str, float] = {}  # container id -> first failed docker start
        self._start_again_refused: dict[str, float] = {}  # container id -> first docker start the engine refused
        # The Docker listing is re-read only when it can have changed: a Docker event for this
        # node, one of our own actions finishing, or the periodic resync.  Etcd events alone
        # (other nodes' claims, DNS-only changes) re-plan from the cached listing, which keeps
        # the engine free for creates while a large service converges.
        self._containers_stale = True
        self._listed_at = float("-inf")
        self._relist_after = float("-inf")  # a stale listing waits for this (paced: RELIST_PACE)
        # containers started by us (``observe_started``) with a sequence number: a listing begun
        # before a start may finish after it, and must not drop the container until the next one
        self._started: dict[str, tuple[int, ContainerInfo]] = {}
        self._started_seq = 0
        self.relist_interval = 2.0
        self.reconciles = 0
        self.reconcile_seconds = 0.0
        self.plan_seconds = 0.0  # the last pass's planning, without its waits (paces the loop)
        self.latency = Histogram()
        self.actions_total: dict[str, int] = {}
        self.last_error = ""

    # ------------------------------------------------------------------ loop
    @property
    def claiming(self) -> bool:
        return self._claiming

    @claiming.setter
    def claiming(self, value: bool) -> None:
        if value != self._claiming:
            self._claiming = value
            self.mark_dirty()

    def mark_dirty(self) -> None:
        self.dirty.set()

    def mark_containers_dirty(self) -> None:
        """Docker changed something of ours: re-list containers on the next pass."""
        self._containers_stale = True
        self.dirty.set()

    def local(self) -> LocalContainers:
        """This node's containers the pass plans for (the reaper's left out), indexed by service;
        the same object until the listing or the reaper changes."""
        reaped = self.reaper.ids()
        if not reaped:
            return self.containers
        last = self._local
        if last is None or last[0] is not self.containers or last[1] != reaped:
            touched = {s for c in (reaped ^ last[1] if last else reaped) if (s := self._service_of(c)) is not None}
            out = self.containers.filtered(lambda c: c.id not in reaped, since=last and (last[0], last[2]),
                                           touched=touched)
            self._local = last = (self.containers, reaped, out)
        return last[2]

    def _service_of(self, container_id: str) -> ServiceName | None:
        c = self.containers.by_id.get(container_id)  # (one no longer listed is in no group)
        return c.service if c is not None else None

    def observe_started(self, info: ContainerInfo) -> None:
        """A container this node just started runs, whatever the last listing said: our own DNS
        and nginx may serve it as soon as its record says so, not only after the next listing
        (which waits for the engine, busy with the creates of a large service)."""
        self._started_seq += 1
        self._started[info.id] = (self._started_seq, info)
        self.containers = self.containers.put(info)
        self.on_local_change()

    def routable(self) -> LocalContainers:
        """This node's running containers that are not being stopped (for its own DNS and nginx);
        the same object until the listing or the stopping set changes, and worked out again only
        for the services that changed."""
        last = self._routable
        if last is None or last[0] is not self.containers or last[1] != self._stopping:
            stopping = dict(self._stopping)
            touched = {name for _, name in stopping.items() ^ last[1].items()} if last else set()
            out = self.containers.filtered(lambda c: c.serving and c.id not in stopping,
                                           since=last and (last[0], last[2]), touched=touched)
            self._routable = last = (self.containers, stopping, out)
        return last[2]

    async def run(self, *, resync_interval: float = 2.0) -> None:
        """Forever: wait for a change, a timer or the periodic resync, then :meth:`reconcile_once`."""
        while True:
            wake = min(self._next_wake, self._relist_after if self._containers_stale else self._next_wake)
            timeout = max(0.0, min(resync_interval, wake - self.clock() + 0.01))
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns normally when the
            # event is set in the same loop turn as the task is cancelled, and this loop then
            # waited forever (an agent shutting down hung in "wait for the acting tasks")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.dirty.wait()
            self.dirty.clear()
            try:
                await self.reconcile_once()
                self.last_error = ""
                # paced: a pass whose planning (not its waits on Docker) took long is followed by
                # as long a pause, in which events only coalesce (level-triggered: the next pass
                # sees them all), so planning takes at most half of the loop and the lease's
                # keepalives and the watch keep up
                if self.plan_seconds > PACE_ABOVE:
                    await asyncio.sleep(min(self.plan_seconds, PACE_MAX))
            except DaprDockrError as exc:
                self.last_error = str(exc)
                log.warning("reconcile failed (%s); retrying", exc)
                await asyncio.sleep(0.5)

    async def reconcile_once(self) -> list[Action]:
        """One pass: observe, plan, launch the actions; returns the actions launched."""
        t0 = time.perf_counter()
        if not self.lease:
            return []
        began = self.clock()
        if ((self._containers_stale and began >= self._relist_after)
                or began - self._listed_at >= self.relist_interval):
            self._containers_stale = False
            listing_from = self._started_seq
            try:
                containers = await self.runtime.list_managed()
            except BaseException as exc:
                self._containers_stale = True
                if isinstance(exc, RuntimeUnavailableError):
                    self._engine_away()
                raise
            listed = {c.id for c in containers}
            self._exits_counted &= listed
            self._start_again_failing = {i: t for i, t in self._start_again_failing.items() if i in listed}
            self._start_again_refused = {i: n for i, n in self._start_again_refused.items() if i in listed}
            for c in containers:
                if c.doomed:
                    self.reaper.add(c, error="Docker lists it dead or being removed")
            self._listed_at = self.clock()
            # paced: a listing that took long (many containers) is not redone for RELIST_PACE
            # times as long, however many events come (a start of ours is in self._started)
            self._relist_after = self._listed_at + RELIST_PACE * (self._listed_at - began)
            # started since the listing began: the listing may predate the start (or show the
            # container created but not yet running); the next listing is the truth again
            self._started = {i: (seq, c) for i, (seq, c) in self._started.items() if seq > listing_from}
            fresh = LocalContainers([c for c in containers if c.id not in self._started]
                                    + [c for _, c in self._started.values()], like=self.containers)
            if fresh != self.containers or not self.listed:
                self.containers = fresh
                self.listed = True
                self.on_local_change()
        planning = time.perf_counter()  # (from here on the pass does not wait: its CPU time)
        state = self.mirror.state()
        if (self._slot_task is None or self._slot_task.done()) and self._leftover_slots(state):
            self._slot_task = asyncio.create_task(self._tidy_slots(), name="tidy slots")
        now = self.clock()
        local = self.local()
        if self._paused_of is None or self._paused_of[0] is not local:  # (a new listing: who is paused since when)
            paused = local.filtered(lambda c: c.paused, since=self._paused_of)
            if self._paused_of is None or paused != self._paused_of[1]:
                self._paused_since = {c.id: self._paused_since.get(c.id, now) for c in paused}
            self._paused_of = (local, paused)
        track_unowned_since(self._unowned_since, seen=self._unowned_seen, unowned=state.unowned, now=now)
        self._unowned_seen = state.unowned
        health, restart = self.health.observed(local, state.services)
        busy = frozenset(k for k, t in self._inflight.items() if not t.done())
        waiting = self.retries.waiting(now=now)
        inputs = PassInputs(lease=self.lease, claiming=self.claiming, capacity=self.capacity, nodes=state.nodes,
                            containers=local, busy=busy, health=health, restart=restart,
                            held=frozenset(waiting), paused=bool(self._paused_since))
        scope = plan_scope(last=self._last_inputs, inputs=inputs, old=self._planned, new=state, now=now,
                           wakes=self._wakes, last_full=self._last_full)
        self._last_inputs, self._planned = inputs, state
        if scope is None:
            self._last_full = now
        observed = Observed(
            node_id=self.node_id,
            lease=self.lease,
            now=now,
            instances=state.instances,
            nodes=state.nodes,
            containers=local,
            busy=busy,
            unowned_since=self._unowned_since,
            retry_at={k: e.not_before for k, e in waiting.items() if e.hold == "start"},
            held_until={k: e.not_before for k, e in waiting.items() if e.hold == "all"},
            capacity=self.capacity,
            claim_grace=self.claim_grace,
            claiming=self.claiming,
            frozen=state.frozen,
            bad_instances=state.invalid_instances,
            rollouts=state.rollouts,
            slots=state.slots,
            draining=state.draining,
            health=health,
            restart=restart,
            paused_since=self._paused_since,
            rebalance=self.rebalance,
            wall=time.time(),
            invalid=invalid_services(state),
            unowned=state.unowned,
            even=self._even,
            scope=scope,
            claim_budget=max(0, MAX_CLAIMS_IN_FLIGHT - len(self._claims)),
        )
        planned = plan_next(state.services, observed)
        actions = planned.actions
        # (a scoped pass keeps the timers of the services it did not plan: none of them was due)
        if scope is None:
            self._wakes = dict(planned.wakes)
        else:
            wakes = {name: moment for name, moment in self._wakes.items() if name not in scope}
            for name, moment in planned.wakes.items():
                if moment < wakes.get(name, float("inf")):
                    wakes[name] = moment
            self._wakes = wakes
        self._next_wake = min(self._wakes.values(), default=float("inf"))
        if actions:
            log.debug("planned %d actions with live nodes %s", len(actions), sorted(state.nodes))
        by_key: dict[Key, list[Action]] = {}
        for action in actions:
            by_key.setdefault(action_key(action), []).append(action)
        for key, group in by_key.items():
            task = asyncio.create_task(self._run_actions(group), name=f"instance {key[0]}/{key[1]}")
            self._inflight[key] = task
            if any(isinstance(a, Claim) for a in group):
                self._claims.add(key)
            task.add_done_callback(lambda t, k=key: self._done(k, t))  # type: ignore[misc]
        self.plan_seconds = time.perf_counter() - planning
        elapsed = time.perf_counter() - t0
        self.reconciles += 1
        self.reconcile_seconds += elapsed
        self.latency.observe(elapsed)
        return actions

    def _done(self, key: Key, task: asyncio.Task[None]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
            self._claims.discard(key)
        if not task.cancelled() and task.exception() is not None:
            log.error("action for %s/%s crashed", key[0], key[1], exc_info=task.exception())
        self.mark_containers_dirty()

    async def cancel_all(self) -> None:
        tasks = [*self._inflight.values(), *([self._slot_task] if self._slot_task is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ executing actions
    async def _run_actions(self, actions: list[Action]) -> None:
        for action in actions:
            kind = type(action).__name__
            self.actions_total[kind] = self.actions_total.get(kind, 0) + 1
            key = action_key(action)
            try:
                await self._execute(action)
            except DaprDockrError as exc:
                # etcd or Docker failed mid-action: back off on this key instead of re-planning it hot
                now = self.clock()
                entry = self.retries[key] = self.policy.action_failed(
                    self.retries.get(key, KeyRetry()), now=now, rand=self.rand())
                log.warning("%s %s/%s failed (retry in %.1fs): %s", kind.lower(), key[0], key[1],
                            entry.not_before - now, exc)
                return
            if key in self.retries:
                self.retries[key] = self.policy.action_ok(self.retries[key])

    async def _execute(self, action: Action) -> None:
        if isinstance(action, Claim):
            await self._claim(action.key, action.spec)
        elif isinstance(action, Start):
            await self._start(action.record, action.spec, old=action.old, reason=action.reason)
        elif isinstance(action, Roll | TakeOver):
            await self._replace(action)
        elif isinstance(action, Adopt):
            await self._adopt(action)
        elif isinstance(action, Refresh):
            await self._must_write(self._running_record(action.record, action.container))
        elif isinstance(action, Release):
            # etcd first: if the key cannot be deleted (etcd unreachable) this raises and the
            # container keeps serving; it stops only once no node routes to it any more
            released = await self.store.release_instance(action.record)
            if self._confirmed(released):
                log.info("released %s/%s (%s)", action.record.service, action.record.number, action.reason)
            if action.container is not None:
                await self._take_out(action.container, removed_at=released.revision if released else 0,
                                     routed=action.record.routable)
            self.retries.pop(action.record.key_tuple, None)
        elif isinstance(action, Repair):
            await self._repair(action)
        elif isinstance(action, Purge):
            if not self._confirmed(await self.store.purge_instance(key=action.bad.key,
                                                                   mod_revision=action.bad.mod_revision)):
                raise StoreError(f"{action.bad.key} changed before it could be deleted", transient=True)
            log.warning("deleted unusable instance key %s (%s)", action.bad.key, action.bad.reason)
        else:
            assert isinstance(action, Stop)
            log.info(
                "stopping container %s of %s/%s: %s",
                action.container.id[:12], action.container.service, action.container.number, action.reason,
            )
            removed_at = await self._left_routing_at(action.container, until=action.removed_at)
            await self._take_out(action.container, removed_at=removed_at, routed=bool(removed_at))

    async def _left_routing_at(self, c: ContainerInfo, *, until: int) -> int:
        """The revision at which the routers took ``c`` out, read from its key's history up to
        ``until`` (the key is held by another node now): 0 when no record ever routed it.  When
        the history cannot be read, ``until`` (the confirmation then waits its bound at most)."""
        if not until:
            return 0
        try:
            events = await self.store.instance_history(c.service, c.number, until=until)
        except DaprDockrError as exc:
            log.info("history of %s/%s unreadable (%s): confirming its removal at revision %d", c.service,
                     c.number, exc, until)
            return until
        left = left_routing_at(events, c.id)
        if left:
            log.info("container %s of %s/%s left the routes at revision %d", c.id[:12], c.service, c.number, left)
        else:
            log.info("container %s of %s/%s was routed by no record since revision %d: no removal to confirm",
                     c.id[:12], c.service, c.number, events[0].revision if events else until)
        return left

    async def _retire(self, rec: InstanceRecord, old: ContainerInfo, *, reason: str) -> InstanceRecord | None:
        """Take our instance's container ``old`` out of service before it is replaced: the record
        says ``starting`` (out of every router), then confirmed removal, drain and stop.  Returns
        the record as it now stands in etcd (on our lease), or None if the key is no longer ours."""
        removed_at = 0
        if rec.state == "running":
            starting = replace(rec, state="starting", ports=(), since=time.time(), error=reason)
            written = await self.store.update_instance(starting, lease=self.lease)
            if not self._confirmed(written):
                log.warning("instance %s/%s is no longer ours", rec.service, rec.number)
                return None
            assert written is not None
            removed_at = written.revision
        # an instance that was not routable (unhealthy) left the routers already: nothing to confirm
        await self._take_out(old, removed_at=removed_at, routed=rec.routable)
        return replace(rec, lease=self.lease)

    async def _take_out(self, c: ContainerInfo, *, removed_at: int, routed: bool,
                        confirmed: Callable[[], Awaitable[None]] | None = None) -> None:
        """Confirmed removal: an instance that was routed leaves every live agent's nginx and DNS
        first (each has applied etcd revision ``removed_at``; bounded; then ``confirmed`` is
        awaited), then its connections drain (bounded), then it gets its stop signal and grace
        period."""
        if routed and removed_at:
            await self.confirm_removal(removed_at)
            if confirmed is not None:
                await confirmed()
            left = await self.runtime.drain(c, within=self.drain_timeout)
            if left:
                log.info("%d connection(s) still open to %s/%s after %.1fs; stopping it anyway", left, c.service,
                         c.number, self.drain_timeout)
        await self.stop_container(c, grace=self.stop_timeout)

    async def stop_container(self, c: ContainerInfo, *, grace: float) -> None:
        """Stop and remove ``c`` with its service's stop signal and grace period (``grace`` when the
        spec names none; 0 kills at once); it leaves this node's own DNS and nginx first."""
        spec = self.mirror.state().services.get(c.service)
        signal = spec.stop_signal if spec is not None else None
        if grace > 0 and spec is not None and spec.stop_timeout is not None:
            grace = spec.stop_timeout
        self._stopping[c.id] = c.service
        self.on_local_change()
        try:
            await self.runtime.remove(c.id, grace=grace, signal=signal)
        finally:
            self._stopping.pop(c.id, None)

    def _why_not_start_again(self, old: ContainerInfo, spec: ServiceSpec, *, crashes: int) -> str:
        """Why the exited container ``old`` is not started again as it is ("" when it is)."""
        if old.spec_hash != spec.runtime_hash:
            return "its spec changed"
        if old.doomed:
            return "Docker is removing it"
        if crashes > START_AGAIN_LOOP:
            return f"it exited {crashes} times in a row soon after a start"
        failing = self._start_again_failing.get(old.id)
        if failing is not None and self.clock() - failing > START_AGAIN_FOR:
            return f"docker start has failed for {START_AGAIN_FOR:g}s"
        refused = self._start_again_refused.get(old.id)
        if refused is not None and self.clock() - refused >= START_AGAIN_REFUSED:
            return f"the engine refused to start it for {START_AGAIN_REFUSED:g}s"
        return ""

    def _engine_away(self) -> None:
        """The engine does not answer (it is restarting): what it refused while it went down, and
        the exits it caused, say nothing about the containers.  A dying dockerd answers for a moment
        with errors ("transport is closing", "failed to update store ... libnetwork") after it
        killed every container; counted, they had every instance re-created once it was back."""
        self._start_again_refused.clear()
        self._exits_counted.clear()
        for k, e in list(self.retries.items()):
            self.retries[k] = replace(e, crashes=0)

    async def _start_again(self, rec: InstanceRecord, spec: ServiceSpec, old: ContainerInfo) -> None:
        """``docker start`` our exited container ``old`` as it is (still the spec's; its writable
        layer kept, as Docker's own restart policy does): an engine or host restart stopped every
        container, and each comes back as it was.  A failure keeps the container and fails the
        action (retried with backoff) for up to ``START_AGAIN_FOR`` seconds while the engine is
        unreachable, and ``START_AGAIN_REFUSED`` seconds when it answers with an error; a
        container that keeps exiting soon after its start (more than ``START_AGAIN_LOOP`` times in
        a row: a crash loop) is replaced by a new one."""
        log.info("starting %s/%s's exited container %s again", rec.service, rec.number, old.id[:12])
        try:
            info = await self.runtime.restart_instance(old, spec=spec)
        except RuntimeUnavailableError:
            self._start_again_failing.setdefault(old.id, self.clock())  # the engine is away: try again
            self._engine_away()
            raise
        except DaprDockrError as exc:  # (the engine may be going down: tried again for a while)
            self._start_again_failing.setdefault(old.id, self.clock())
            # a terminal refusal (it can never start again) replaces it on the next pass
            if exc.transient:
                self._start_again_refused.setdefault(old.id, self.clock())
            else:
                self._start_again_refused[old.id] = float("-inf")
            raise
        self._exits_counted.discard(old.id)
        self._start_again_failing.pop(old.id, None)
        self._start_again_refused.pop(old.id, None)
        self.retries[rec.key_tuple] = self.policy.started(self.retries.get(rec.key_tuple, KeyRetry()), now=self.clock())
        self.observe_started(info)
        if not await self._write(replace(self._running_record(rec, info), since=time.time())):
            log.warning("lost %s/%s while starting it again; removing the container", rec.service, rec.number)
            await self.runtime.remove(info.id, grace=0)
            return
        log.info("running %s/%s again in its container %s", rec.service, rec.number, info.id[:12])

    async def _remove_for_good(self, container_id: str) -> None:
        """Remove a container and check it is gone (Docker answers a removal already under way
        with success while the container stays)."""
        await self.runtime.remove(container_id, grace=0)
        if await self.runtime.inspect(container_id) is not None:
            raise ContainerError(f"container {container_id[:12]} is still there", transient=True)

    async def _repair(self, action: Repair) -> None:
        """Rewrite a malformed (or lease-less) key from our running container onto our lease, iff
        the key is unchanged since it was read (a compare on its mod revision)."""
        c = action.container
        rec = replace(self._running_record(self._fresh_record(c), c), create_revision=action.bad.create_revision,
                      mod_revision=action.bad.mod_revision, lease=self.lease)
        if not self._confirmed(await self.store.take_over_instance(rec, lease=self.lease)):
            raise StoreError(f"{action.bad.key} changed before it could be rewritten", transient=True)
        log.warning("rewrote malformed instance key %s from container %s (%s)", action.bad.key, c.id[:12],
                    action.bad.reason)

    async def _claim(self, key: Key, spec: ServiceSpec) -> None:
        service, number = key
        rec = InstanceRecord(
            service=service, number=number, node=self.node_id, address=self.address,
            state="starting", spec_hash=spec.runtime_hash, since=time.time(),
        )
        lease = self.lease
        written = await self.store.claim_instance(rec, lease=lease)
        if not self._confirmed(written):
            log.debug("lost the race for %s/%s", service, number)
            return
        assert written is not None
        log.info("claimed %s/%s", service, number)
        await self._start(replace(rec, create_revision=written.create_revision, lease=lease), spec, old=None,
                          reason="claimed")

    async def _start(
        self, rec: InstanceRecord, spec: ServiceSpec, *, old: ContainerInfo | None, reason: str
    ) -> None:
        key = rec.key_tuple
        entry = self.retries.get(key, KeyRetry())
        if old is not None and not old.running:
            # a crash: restart without waiting for etcd, and back off if it crashes in a loop
            if old.id not in self._exits_counted:  # (a retried start of the same exit counts once)
                self._exits_counted.add(old.id)
                entry = self.retries[key] = self.policy.crashed(entry, now=self.clock(), rand=self.rand())
            why_not = self._why_not_start_again(old, spec, crashes=entry.crashes)
            if not why_not:
                await self._start_again(rec, spec, old)
                return
            log.info("restarting %s/%s: %s (a new container: %s)", rec.service, rec.number, reason, why_not)
            try:
                await self.stop_container(old, grace=0)
            except DaprDockrError as exc:  # the new container starts beside it, under a fresh name
                self.reaper.add(old, error=str(exc))
        elif old is not None:
            log.info("replacing container of %s/%s: %s", rec.service, rec.number, reason)
            if reason == "unhealthy":  # a restart for failing its checks backs off like a crash
                entry = self.retries[key] = self.policy.crashed(entry, now=self.clock(), rand=self.rand())
            retired = await self._retire(rec, old, reason=reason)
            if retired is None:
                return
            rec = retired
        try:
            info = await self.runtime.start_instance(spec=spec, number=rec.number)
        except DaprDockrError as exc:
            now = self.clock()
            entry = self.retries[key] = self.policy.start_failed(
                entry, now=now, rand=self.rand(), terminal=not exc.transient)
            log.warning(
                "starting %s/%s failed (%d times, retry in %.1fs): %s",
                rec.service, rec.number, entry.crashes, entry.not_before - now, exc,
            )
            await self._write(
                replace(rec, state="failed", error=str(exc), container_id="", ports=(), since=time.time())
            )
            return
        self.retries[key] = self.policy.started(entry, now=self.clock())
        self.observe_started(info)
        if not await self._write(self._running_record(rec, info)):
            log.warning("lost %s/%s while starting it; removing the container", rec.service, rec.number)
            await self.runtime.remove(info.id, grace=0)
            return
        log.info("running %s/%s as %s (%s)", rec.service, rec.number, info.id[:12], reason)

    # ------------------------------------------------------------------ replacements
    async def _replace(self, action: Roll | TakeOver) -> None:
        """A rolling-update replacement or a takeover from a draining node, in a replacement slot."""
        rec, spec = action.record, action.spec
        lease = self.lease
        slot = Slot(node=self.node_id, instance=rec.number, since=time.time(), target=spec.runtime_hash)
        index, revision = await self.rollouts.take_slot(spec.name, parallel=spec.update.parallel, slot=slot,
                                                        lease=lease)
        if not index:
            await asyncio.sleep(self.slot_retry)  # another node took the last slot: its release re-plans us
            return
        job = _Job(spec=spec, index=index, slot=replace(slot, create_revision=revision), lease=lease,
                   deadline=asyncio.get_running_loop().time() + spec.update.deadline,
                   rollout=isinstance(action, Roll), rebalancing=isinstance(action, TakeOver) and action.rebalancing)
        released = False

        async def release() -> None:  # once: when the old container is out of every router, or at the end
            nonlocal released
            if not released:
                released = True
                await self._release_slot(job)

        try:
            if isinstance(action, TakeOver):
                await self._take_over(job, rec, reason="rebalancing" if action.rebalancing else "draining")
            elif spec.update.order == "start-first":
                await self._roll_start_first(job, rec, action.old, release)
            else:
                await self._roll_stop_first(job, rec, action.old)
        except ReplacementAbandoned as gone:  # not a failure: the key is planned afresh, without a hold
            log.info("replacement of %s/%s stopped: %s", rec.service, rec.number, gone)
        except ReplacementFailed as failure:
            log.warning("replacement of %s/%s failed: %s", rec.service, rec.number, failure.reason)
            if job.rollout and not await self._report_failure(job, failure.reason):
                released = True  # marked failed but not reported yet: it stays until it is (see _tidy_slots)
            raise
        finally:
            await release()

    async def _release_slot(self, job: _Job) -> None:
        await self._release(job.spec.name, job.index, job.slot.create_revision)

    async def _release(self, name: ServiceName, index: int, create_revision: int) -> bool:
        """Delete our slot ``index`` (a compare on its create revision: never one taken anew since);
        False if it was not there, or etcd failed (a later pass of :meth:`_tidy_slots` tries
        again; our lease takes it along at the latest)."""
        try:
            done = await self.rollouts.release_slot(name, index, create_revision=create_revision)
        except DaprDockrError as exc:
            log.warning("could not release replacement slot %d of %s (%s); retrying", index, name, exc)
            return False
        self._released_slots.add(create_revision)
        return done

    def _leftover_slots(self, state: ClusterState) -> list[tuple[ServiceName, int, Slot]]:
        """Slots of this node that no replacement task holds: a release that failed, a take that
        committed although its reply was lost (the retried call then found the slot taken), a
        failed replacement whose failure could not be reported, a slot of our previous lease."""
        ours = [(name, index, slot) for name, by_index in state.slots.items() for index, slot in by_index.items()
                if slot.node == self.node_id]
        self._released_slots &= {slot.create_revision for _, _, slot in ours}
        return [(name, index, slot) for name, index, slot in ours
                if slot.create_revision not in self._released_slots and not self._holds((name, slot.instance))]

    def _holds(self, key: Key) -> bool:
        task = self._inflight.get(key)
        return task is not None and not task.done()

    async def _tidy_slots(self) -> None:
        """Release :meth:`_leftover_slots`, each with a compare on its create revision (so never a
        slot taken anew since); a failed replacement's failure is reported first, while its
        rollout is undecided."""
        state = self.mirror.state()
        for name, index, slot in self._leftover_slots(state):
            spec, rollout = state.services.get(name), state.rollouts.get(name)
            if slot.failed and spec is not None and rollout is not None and rollout.state == "rolling" \
                    and rollout.target == slot.target:
                try:
                    await self._rollout_failed(spec, slot.failed, target=slot.target)
                except DaprDockrError as exc:  # the next pass tries again, the slot held meanwhile
                    log.warning("could not report the failed rollout of %s (%s); retrying", name, exc)
                    continue
            if await self._release(name, index, slot.create_revision):
                log.info("released leftover replacement slot %d of %s (instance %d)", index, name, slot.instance)

    async def _report_failure(self, job: _Job, reason: str) -> bool:
        """Mark our slot failed (so no new replacement towards this target starts anywhere), then
        fail the rollout (rollback or pause).  False: marked, but the rollout could not be told."""
        text = f"instance {job.slot.instance} on {self.node_id}: {reason}"[:1024]
        marked = False
        try:
            marked = await self.rollouts.mark_slot_failed(job.spec.name, job.index,
                                                          slot=replace(job.slot, failed=text), lease=job.lease)
        except DaprDockrError as exc:
            log.warning("could not mark replacement slot %d of %s failed: %s", job.index, job.spec.name, exc)
        try:
            await self._rollout_failed(job.spec, text)
        except DaprDockrError as exc:
            log.warning("could not report the failed rollout of %s (%s); retrying", job.spec.name, exc)
            return not marked  # unmarked, the slot would be released unreported: let it go as usual
        return True

    async def _roll_start_first(self, job: _Job, rec: InstanceRecord, old: ContainerInfo,
                                release: Callable[[], Awaitable[None]]) -> None:
        new = await self._start_replacement(job, rec.number, beside=True)
        log.info("rolling %s/%s: replacement %s started beside %s", rec.service, rec.number, new.id[:12],
                 old.id[:12])

        async def follow_old() -> None:
            # the key is busy with this replacement, so no Refresh writes the old container's
            # health meanwhile: an old container that turns unhealthy leaves the routers now
            nonlocal rec
            health = self.health.health_of(old, job.spec)
            if health is None or health == rec.health:
                return
            try:
                if await self._write(replace(rec, health=health)):
                    rec = replace(rec, health=health)
            except DaprDockrError as exc:
                log.warning("could not record the health of %s/%s (%s)", rec.service, rec.number, exc)

        await self._await_healthy(job, new, each_round=follow_old)
        written = await self.store.update_instance(self._running_record(rec, new, healthy=True), lease=self.lease)
        if not self._confirmed(written):
            log.warning("instance %s/%s is no longer ours; removing its replacement", rec.service, rec.number)
            await self.runtime.remove(new.id, grace=0)
            return
        assert written is not None
        log.info("rolled %s/%s onto %s; taking %s out", rec.service, rec.number, new.id[:12], old.id[:12])
        # the replacement is done once no router sends the old one new requests: the slot is
        # free while it drains and stops
        await self._take_out(old, removed_at=written.revision, routed=rec.routable, confirmed=release)

    async def _roll_stop_first(self, job: _Job, rec: InstanceRecord, old: ContainerInfo) -> None:
        log.info("rolling %s/%s: taking %s out first (stop-first)", rec.service, rec.number, old.id[:12])
        retired = await self._retire(rec, old, reason="rolling update")
        if retired is None:
            return
        # the deadline is the new version's (start and health): taking the old one out (confirmed
        # removal, drain, stop) does not count against it
        job = replace(job, deadline=asyncio.get_running_loop().time() + job.spec.update.deadline)
        rec = replace(retired, state="starting")
        new = await self._start_replacement(job, rec.number, beside=False)
        # the record names the new container at once (an agent restart adopts it) but it is routed
        # only once it passed its check for min_healthy, as with start-first
        await self._must_write(replace(self._running_record(rec, new), state="starting"))
        await self._await_healthy(job, new)
        await self._must_write(self._running_record(rec, new, healthy=True))
        log.info("rolled %s/%s onto %s", rec.service, rec.number, new.id[:12])

    async def _take_over(self, job: _Job, rec: InstanceRecord, *, reason: str) -> None:
        new = await self._start_replacement(job, rec.number, beside=True)
        log.info("taking over %s/%s from node %s (%s): started %s", rec.service, rec.number, rec.node,
                 reason, new.id[:12])
        await self._await_healthy(job, new)
        mine = replace(self._running_record(rec, new, healthy=True), since=time.time(), lease=self.lease)
        if not self._confirmed(await self.store.take_over_instance(mine, lease=self.lease)):
            log.info("%s/%s changed before the takeover; removing %s", rec.service, rec.number, new.id[:12])
            await self.runtime.remove(new.id, grace=0)
            return
        log.info("took over %s/%s from %s as %s", rec.service, rec.number, rec.node, new.id[:12])

    def _abandon_reason(self, job: _Job) -> str:
        """Why the replacement ``job`` should stop now ("": it goes on)."""
        if self.lease != job.lease:
            return "our lease was replaced (the slot went with the old one)"
        state = self.mirror.state()
        spec = state.services.get(job.spec.name)
        if spec is None or spec.runtime_hash != job.spec.runtime_hash:
            return "the service's spec changed (rolled back, or a newer version)"
        if job.rebalancing and job.spec.name in invalid_services(state):
            return "the service has malformed data in etcd (a move waits until it is mended)"
        rollout = state.rollouts.get(job.spec.name)
        if (job.rollout and job.spec.update.order == "start-first" and rollout is not None
                and rollout.target == job.spec.runtime_hash and rollout.state == "paused"):
            return "the rollout was paused"  # (stop-first goes on: the old container is gone already)
        return ""

    async def _start_replacement(self, job: _Job, number: int, *, beside: bool) -> ContainerInfo:
        """Start the replacement within its deadline: a start that fails ``START_ATTEMPTS`` times
        (a missing image, a container that exits at once), is refused for good, or does not finish
        before the deadline fails the replacement.  An unreachable engine is no failure of the
        new version: it raises as it is, and the key backs off."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            if why := self._abandon_reason(job):
                raise ReplacementAbandoned(why)
            left = job.deadline - loop.time()
            if left <= 0:
                raise ReplacementFailed(f"did not start within {job.spec.update.deadline:g}s")
            try:
                async with asyncio.timeout(left):
                    info = await self.runtime.start_instance(spec=job.spec, number=number, beside=beside)
                self.observe_started(info)
                return info
            except TimeoutError:
                raise ReplacementFailed(f"did not start within {job.spec.update.deadline:g}s") from None
            except ContainerError as exc:
                failures += 1
                if not exc.transient or failures >= START_ATTEMPTS:
                    raise ReplacementFailed(f"could not start: {exc}") from None
                log.warning("starting a replacement of %s/%s failed (%d of %d): %s", job.spec.name, number,
                            failures, START_ATTEMPTS, exc)
            await asyncio.sleep(max(0.0, min(START_RETRY * failures, job.deadline - loop.time())))

    async def _await_healthy(self, job: _Job, c: ContainerInfo,
                             each_round: Callable[[], Awaitable[None]] | None = None) -> None:
        """Return once ``c`` has run and passed its check (without one: kept running) for
        ``update.min_healthy`` seconds; past the replacement's deadline remove it and raise
        :class:`ReplacementFailed`.  Remove it and raise :class:`ReplacementAbandoned` as soon as
        the replacement has no point any more (:meth:`_abandon_reason`)."""
        loop = asyncio.get_running_loop()
        spec = job.spec
        policy = spec.update
        period = min(spec.health.interval, 0.5) if spec.health is not None else 0.25
        healthy_since: float | None = None
        reason = f"not healthy for {policy.min_healthy:g}s within {policy.deadline:g}s"
        while True:
            now = loop.time()
            if why := self._abandon_reason(job):
                log.info("replacement %s of %s/%s abandoned: %s", c.id[:12], c.service, c.number, why)
                await self.runtime.remove(c.id, grace=0)
                raise ReplacementAbandoned(why)
            current = await self.runtime.inspect(c.id)
            if current is None or not current.running:
                reason = "the replacement exited"
                break
            if each_round is not None:
                await each_round()
            if await self.health.probe(c, spec):
                healthy_since = now if healthy_since is None else healthy_since
                if now - healthy_since >= policy.min_healthy:
                    return
            else:
                healthy_since = None
            if now >= job.deadline:
                break
            await asyncio.sleep(max(0.01, min(period, job.deadline - now)))
        log.warning("replacement %s of %s/%s failed: %s", c.id[:12], c.service, c.number, reason)
        await self.runtime.remove(c.id, grace=0)
        raise ReplacementFailed(reason)

    async def _rollout_failed(self, spec: ServiceSpec, reason: str, *, target: str = "") -> None:
        """Tell the rollout towards ``target`` (default: ``spec``'s) that a replacement failed: the
        first agent to report it decides (rollback or pause, by ``spec.update.on_failure``)."""
        outcome = await self.rollouts.fail_rollout(spec.name, target=target or spec.runtime_hash, reason=reason,
                                                   rollback=spec.update.on_failure == "rollback")
        log.warning("rollout of %s %s: %s", spec.name, outcome or "already decided", reason)

    def _fresh_record(self, c: ContainerInfo) -> InstanceRecord:
        """A record of ours for container ``c`` with nothing known yet (adopted, or rewritten over
        bad data): :meth:`_running_record` fills it in."""
        return InstanceRecord(service=c.service, number=c.number, node=self.node_id, address=self.address,
                              state="starting", since=time.time())

    def _running_record(self, rec: InstanceRecord, c: ContainerInfo, *, healthy: bool = False) -> InstanceRecord:
        spec = self.mirror.state().services.get(c.service)
        health = self.health.health_of(c, spec) if spec is not None else rec.health
        if health is None:  # no verdict yet: what the record says of this container, else starting
            health = rec.health if rec.container_id == c.id and rec.health else "starting"
        if healthy and health:  # it just passed its checks for min_healthy (a replacement)
            health = "healthy"
        return replace(
            rec, node=self.node_id, address=self.address, state="paused" if c.paused else "running", ports=c.ports,
            container_id=c.id, spec_hash=c.spec_hash, error="", health=health,
            since=rec.since if rec.state == "running" and rec.container_id == c.id else time.time(),
        )

    def _confirmed(self, written: WatchEvent | None) -> bool:
        """Hand a confirmed write's event to the agent's mirror (read-your-writes), after the
        store call returned: a failure there is never mistaken for an etcd failure."""
        if written is None:
            return False
        self.on_written(written)
        return True

    async def _write(self, rec: InstanceRecord) -> bool:
        ok = self._confirmed(await self.store.update_instance(rec, lease=self.lease))
        if not ok:
            log.warning("instance %s/%s is no longer ours", rec.service, rec.number)
        return ok

    async def _must_write(self, rec: InstanceRecord) -> None:
        """Overwrite our record; a lost compare means our view of the key is stale, so the key
        cools down (the watch brings the truth) instead of being re-planned hot."""
        if not await self._write(rec):
            raise StoreError(f"{rec.service}/{rec.number} changed in etcd since it was read", transient=True)

    async def _adopt(self, action: Adopt) -> None:
        c = action.container
        if action.record is not None:
            await self._must_write(self._running_record(action.record, c))
            log.info("adopted %s/%s (container %s) on the new lease", c.service, c.number, c.id[:12])
            return
        rec = self._running_record(self._fresh_record(c), c)
        if not self._confirmed(await self.store.claim_instance(rec, lease=self.lease)):
            # the key exists after all (our view is behind): let the watch bring the truth, then
            # re-plan; never stop a running container on a guess
            raise StoreError(f"{c.service}/{c.number} is taken in etcd; not adopting container {c.id[:12]}",
                             transient=True)
        log.info("adopted running container %s as %s/%s", c.id[:12], c.service, c.number)
