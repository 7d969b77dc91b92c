"""The reconcile loop: level-triggered, one worker per instance key.

Events (etcd watch, Docker events, heartbeat changes, a finished action) only call
:meth:`Reconciler.mark_dirty`.  :meth:`Reconciler.reconcile_once` then re-reads what it needs
(this node's containers from Docker, the cluster state from the etcd mirror), asks the pure
planner (:func:`daprdockr.core.planning.plan.plan_next`) for actions and runs each instance key's
actions in a task of its own, so a slow image pull or container stop never blocks other instances.  Keys
with a running task are reported to the planner as *busy* and left alone until it finishes,
which then marks the loop dirty again.  A failed action holds its key back (its
:class:`~daprdockr.core.retry.KeyRetry` entry), so no key is retried hot.

The loop composes the parts in :mod:`daprdockr.reconciling`: the cached Docker listing and the
routable set (``listing``), the executor of an instance's actions (``executor``: claim, start,
restart, adopt, repair, release, stop), release before stop, confirmed (``removal``), the
runner of rolling updates and takeovers in replacement slots (``replacements``), and the task of
each key's running actions (``inflight``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from daprdockr.adapters.container_reaper import ContainerReaper
from daprdockr.adapters.docker_runtime import ContainerRuntime
from daprdockr.core.containers import ContainerInfo, LocalContainers
from daprdockr.core.mirror import StateMirror, WatchEvent
from daprdockr.core.names import ServiceName
from daprdockr.core.planning.actions import Action, Claim, Key, Roll, TakeOver, action_key
from daprdockr.core.planning.claims import track_unowned_since
from daprdockr.core.planning.observed import Observed
from daprdockr.core.planning.plan import plan_next
from daprdockr.core.planning.rebalance import EvenCache
from daprdockr.core.planning.scope import PassInputs, full_every, plan_scope
from daprdockr.core.prometheus import Histogram
from daprdockr.core.retry import KeyRetries, KeyRetry, RetryPolicy
from daprdockr.core.state import ClusterState
from daprdockr.errors import DaprDockrError, RuntimeUnavailableError
from daprdockr.reconciling.context import ReconcileContext
from daprdockr.reconciling.executor import START_AGAIN_FOR, START_AGAIN_LOOP, START_AGAIN_REFUSED, ActionExecutor
from daprdockr.reconciling.executor import remove_for_good as _remove_for_good
from daprdockr.reconciling.inflight import InflightActions
from daprdockr.reconciling.listing import RELIST_PACE, ContainerListing
from daprdockr.reconciling.ports import (
    HealthSource,
    InstanceStore,
    NoChecks,
    RolloutCoordinator,
    Uncoordinated,
    invalid_services,
    no_confirmation,
)
from daprdockr.reconciling.records import RecordWriter
from daprdockr.reconciling.removal import ContainerRemoval
from daprdockr.reconciling.replacements import (
    START_ATTEMPTS,
    START_RETRY,
    ReplacementAbandoned,
    ReplacementFailed,
    ReplacementRunner,
)

__all__ = [
    "MAX_CLAIMS_IN_FLIGHT", "PACE_ABOVE", "PACE_MAX", "RELIST_PACE", "START_AGAIN_FOR", "START_AGAIN_LOOP",
    "START_AGAIN_REFUSED", "START_ATTEMPTS", "START_RETRY", "HealthSource", "InstanceStore", "Reconciler",
    "ReplacementAbandoned", "ReplacementFailed", "RolloutCoordinator", "invalid_services",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

# claims in flight at once: a pass over many unowned numbers (a large service written) plans
# this many, not all of them, so a pass stays short and the event loop keeps the lease alive
MAX_CLAIMS_IN_FLIGHT = 32
PACE_ABOVE = 0.002  # seconds: a pass longer than this is followed by a pause as long (at most PACE_MAX)
PACE_MAX = 0.25


class Reconciler:
    """This node's reconcile loop: observe, plan, dispatch each key's actions to its parts."""

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
        self.ctx = ctx = ReconcileContext(
            node_id=node_id, address=address, store=store, runtime=runtime, mirror=mirror,
            health=health or NoChecks(), rollouts=rollouts or Uncoordinated(), policy=policy or RetryPolicy(),
            clock=clock, rand=rand, on_written=on_written,
            confirm_removal=confirm_removal or no_confirmation, stop_timeout=stop_timeout,
            drain_timeout=drain_timeout,
        )
        self.capacity = capacity
        self.claim_grace = claim_grace
        # containers Docker could not remove: retried in the background, never in an instance's way
        self.reaper = ContainerReaper(remove=functools.partial(_remove_for_good, runtime))
        self.listing = ContainerListing(runtime=runtime, reaper=self.reaper, clock=clock,
                                        on_local_change=on_local_change)
        self.records = RecordWriter(ctx=ctx)
        self.removal = ContainerRemoval(ctx=ctx, records=self.records, listing=self.listing)
        self.executor = ActionExecutor(ctx=ctx, records=self.records, removal=self.removal, started=self.listing,
                                       reaper=self.reaper)
        self.replacements = ReplacementRunner(ctx=ctx, records=self.records, removal=self.removal,
                                              started=self.listing, start_retry=START_RETRY)
        self._claiming = False  # the agent enables claims once the node settled
        self.rebalance = False  # even out services across the nodes (the agent's --rebalance)
        self.dirty = asyncio.Event()
        self._next_wake = float("inf")  # when a claim grace or a retry backoff runs out
        self._wakes: dict[ServiceName, float] = {}  # the same per service (the services a pass must plan then)
        self.inflight = InflightActions(on_done=self.mark_containers_dirty)
        self._unowned_since: dict[Key, float] = {}
        self._unowned_seen: Mapping[ServiceName, tuple[int, ...]] = {}  # the unowned numbers it was kept from
        self._even = EvenCache()  # services the last passes found even (no rebalance move), per spec and records
        self._planned: ClusterState | None = None  # the state the last pass planned from
        self._last_inputs: PassInputs | None = None  # and the rest of what it read
        self._last_full = 0.0  # when the last pass over every service ran
        self._full_seconds = 0.0  # how long its planning took
        self.reconciles = 0
        self.reconcile_seconds = 0.0
        self.plan_seconds = 0.0  # the last pass's planning, without its waits (paces the loop)
        self.latency = Histogram()
        self.actions_total: dict[str, int] = {}
        self.last_error = ""

    # ------------------------------------------------------------------ shared with the parts
    @property
    def mirror(self) -> StateMirror:
        return self.ctx.mirror

    @property
    def retries(self) -> KeyRetries[Key]:
        return self.ctx.retries

    @property
    def lease(self) -> int:
        return self.ctx.lease

    @lease.setter
    def lease(self, value: int) -> None:
        self.ctx.lease = value

    @property
    def health(self) -> HealthSource:
        return self.ctx.health

    @health.setter
    def health(self, value: HealthSource) -> None:
        self.ctx.health = value

    @property
    def policy(self) -> RetryPolicy:
        return self.ctx.policy

    @policy.setter
    def policy(self, value: RetryPolicy) -> None:
        self.ctx.policy = value

    @property
    def confirm_removal(self) -> Callable[[int], Awaitable[None]]:
        return self.ctx.confirm_removal

    @confirm_removal.setter
    def confirm_removal(self, value: Callable[[int], Awaitable[None]]) -> None:
        self.ctx.confirm_removal = value

    # ------------------------------------------------------------------ this node's containers
    @property
    def containers(self) -> LocalContainers:
        return self.listing.containers

    @property
    def listed(self) -> bool:
        """Containers were listed at least once (:meth:`routable` means something)."""
        return self.listing.listed

    @property
    def relist_interval(self) -> float:
        return self.listing.relist_interval

    @relist_interval.setter
    def relist_interval(self, value: float) -> None:
        self.listing.relist_interval = value

    def local(self) -> LocalContainers:
        """This node's containers the pass plans for (:meth:`ContainerListing.local`)."""
        return self.listing.local()

    def routable(self) -> LocalContainers:
        """This node's running containers that are not being stopped (for its own DNS and nginx)."""
        return self.listing.routable()

    def observe_started(self, info: ContainerInfo) -> None:
        """A container this node just started runs (:meth:`ContainerListing.observe_started`)."""
        self.listing.observe_started(info)

    async def stop_container(self, c: ContainerInfo, *, grace: float) -> None:
        """Stop and remove ``c`` (:meth:`ContainerRemoval.stop_container`) with its service's stop
        signal and grace, as the mirror has them now (no plan is behind this stop)."""
        spec = self.ctx.mirror.state().services.get(c.service)
        await self.removal.stop_container(c, grace=grace, spec=spec)

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
        self.listing.mark_stale()
        self.dirty.set()

    async def run(self, *, resync_interval: float = 2.0) -> None:
        """Forever: wait for a change, a timer or the periodic resync, then :meth:`reconcile_once`."""
        while True:
            wake = min(self._next_wake, self.listing.wake_at())
            timeout = max(0.0, min(resync_interval, wake - self.ctx.clock() + 0.01))
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
        try:
            listed = await self.listing.refresh()
        except RuntimeUnavailableError:
            self.executor.engine_away()
            raise
        if listed is not None:
            self.executor.forget_unlisted(listed)
        planning = time.perf_counter()  # (from here on the pass does not wait: its CPU time)
        state = self.mirror.state()
        self.replacements.tidy_in_background(state, holds=self.inflight.holds)
        now = self.ctx.clock()
        local = self.local()
        paused_since = self.listing.paused_since(local, now=now)
        track_unowned_since(self._unowned_since, seen=self._unowned_seen, unowned=state.unowned, now=now)
        self._unowned_seen = state.unowned
        health, restart = self.health.observed(local, state.services)
        busy = self.inflight.busy()
        waiting = self.retries.waiting(now=now)
        inputs = PassInputs(lease=self.lease, claiming=self.claiming, capacity=self.capacity, nodes=state.nodes,
                            containers=local, busy=busy, health=health, restart=restart,
                            held=frozenset(waiting), paused=bool(paused_since))
        scope = plan_scope(last=self._last_inputs, inputs=inputs, old=self._planned, new=state, now=now,
                           wakes=self._wakes, last_full=self._last_full,
                           full_every=full_every(self._full_seconds))
        self._last_inputs, self._planned = inputs, state
        if scope is None:
            self._last_full = now
        observed = Observed(
            node_id=self.ctx.node_id, lease=self.lease, now=now, wall=time.time(), instances=state.instances,
            nodes=state.nodes, containers=local, busy=busy, unowned_since=self._unowned_since,
            retry_at={k: e.not_before for k, e in waiting.items() if e.hold == "start"},
            held_until={k: e.not_before for k, e in waiting.items() if e.hold == "all"},
            capacity=self.capacity, claim_grace=self.claim_grace, claiming=self.claiming, frozen=state.frozen,
            bad_instances=state.invalid_instances, rollouts=state.rollouts, slots=state.slots,
            draining=state.draining, health=health, restart=restart, paused_since=paused_since,
            rebalance=self.rebalance, invalid=invalid_services(state), unowned=state.unowned, even=self._even,
            scope=scope, claim_budget=max(0, MAX_CLAIMS_IN_FLIGHT - self.inflight.claims),
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
            self.inflight.start(key, self._run_actions(group), name=f"instance {key[0]}/{key[1]}",
                                claim=any(isinstance(a, Claim) for a in group))
        self.plan_seconds = time.perf_counter() - planning
        if scope is None:
            self._full_seconds = self.plan_seconds
        elapsed = time.perf_counter() - t0
        self.reconciles += 1
        self.reconcile_seconds += elapsed
        self.latency.observe(elapsed)
        return actions

    async def exclusive(self, key: Key, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` as ``key``'s action (:meth:`InflightActions.exclusive`): passes leave the
        key alone while it runs, and relist the containers after it."""
        return await self.inflight.exclusive(key, work)

    async def cancel_all(self) -> None:
        slots = self.replacements.task()
        tasks = [*self.inflight.tasks(), *([slots] if slots is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ dispatch
    async def _run_actions(self, actions: list[Action]) -> None:
        """One key's actions in order, to the replacement runner or the executor; a failed one
        holds the key back (its retry entry) and ends the rest."""
        for action in actions:
            kind = type(action).__name__
            self.actions_total[kind] = self.actions_total.get(kind, 0) + 1
            key = action_key(action)
            try:
                if isinstance(action, Roll | TakeOver):
                    await self.replacements.run(action)
                else:
                    await self.executor.execute(action)
            except DaprDockrError as exc:
                # etcd or Docker failed mid-action: back off on this key instead of re-planning it hot
                now = self.ctx.clock()
                entry = self.retries[key] = self.policy.action_failed(
                    self.retries.get(key, KeyRetry()), now=now, rand=self.ctx.rand())
                log.warning("%s %s/%s failed (retry in %.1fs): %s", kind.lower(), key[0], key[1],
                            entry.not_before - now, exc)
                return
            if key in self.retries:
                self.retries[key] = self.policy.action_ok(self.retries[key])
