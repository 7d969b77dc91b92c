"""Rolling updates and takeovers (:class:`~daprdockr.core.planning.actions.Roll`,
:class:`~daprdockr.core.planning.actions.TakeOver`).

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
towards that version meanwhile), and the rollout fails over to the
:class:`~daprdockr.reconciling.ports.RolloutCoordinator` (rollback or pause; the first agent to
report it decides). Every release compares the slot's create revision (never another agent's
slot), and each pass releases this node's slots that no replacement task holds (a release that
failed, a take that committed although its reply was lost, a failure that could not be reported
yet: it is reported first). A replacement in flight stops early (:class:`ReplacementAbandoned`,
nothing reported) when the spec moved on, a start-first rollout was paused, or our lease was
replaced. A takeover starts a draining node's instance (or, rebalancing, one of the node with the
most of a service: :mod:`daprdockr.core.planning.rebalance`) here the same way and then moves the key onto
our lease with a compare on the revision it read; a rebalancing one is abandoned when the service
gets malformed data in etcd.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from daprdockr.core.containers import ContainerInfo
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.planning.actions import Key, Roll, TakeOver
from daprdockr.core.records import InstanceRecord
from daprdockr.core.rollout import Slot
from daprdockr.core.state import ClusterState
from daprdockr.errors import ContainerError, DaprDockrError
from daprdockr.reconciling.context import ReconcileContext
from daprdockr.reconciling.parts import Records, Removal, Started
from daprdockr.reconciling.ports import invalid_services

log = logging.getLogger(__name__)

START_ATTEMPTS = 3  # failed starts that fail a replacement (within its deadline)
START_RETRY = 0.5  # seconds before the next start of a replacement, times the failures so far


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


class ReplacementRunner:
    def __init__(self, *, ctx: ReconcileContext, records: Records, removal: Removal, started: Started,
                 start_retry: float = START_RETRY) -> None:
        self.ctx = ctx
        self.records = records
        self.removal = removal
        self.started = started
        self.start_retry = start_retry
        self.slot_retry = 0.25  # seconds before trying again after losing the race for a slot
        self._released_slots: set[int] = set()  # create revisions of slots we deleted (the mirror may lag)
        self._slot_task: asyncio.Task[None] | None = None

    async def run(self, action: Roll | TakeOver) -> None:
        """A rolling-update replacement or a takeover from a draining node, in a replacement slot."""
        ctx = self.ctx
        rec, spec = action.record, action.spec
        lease = ctx.lease
        slot = Slot(node=ctx.node_id, instance=rec.number, since=time.time(), target=spec.runtime_hash)
        index, revision = await ctx.rollouts.take_slot(spec.name, parallel=spec.update.parallel, slot=slot,
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
                await self._release(job.spec.name, job.index, job.slot.create_revision)

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
                released = True  # marked failed but not reported yet: it stays until it is (see tidy)
            raise
        finally:
            await release()

    # ------------------------------------------------------------------ slots
    def tidy_in_background(self, state: ClusterState, *, holds: Callable[[Key], bool]) -> None:
        """Start releasing :meth:`leftover_slots` unless that runs already (``holds``: whether a
        replacement task holds a key)."""
        if (self._slot_task is None or self._slot_task.done()) and self.leftover_slots(state, holds=holds):
            self._slot_task = asyncio.create_task(self._tidy(holds=holds), name="tidy slots")

    def task(self) -> asyncio.Task[None] | None:
        """The slot tidying in flight, if any (cancelled with the acting tasks)."""
        return self._slot_task

    async def _release(self, name: ServiceName, index: int, create_revision: int) -> bool:
        """Delete our slot ``index`` (a compare on its create revision: never one taken anew since);
        False if it was not there, or etcd failed (a later pass of :meth:`_tidy` tries again; our
        lease takes it along at the latest)."""
        try:
            done = await self.ctx.rollouts.release_slot(name, index, create_revision=create_revision)
        except DaprDockrError as exc:
            log.warning("could not release replacement slot %d of %s (%s); retrying", index, name, exc)
            return False
        self._released_slots.add(create_revision)
        return done

    def leftover_slots(self, state: ClusterState, *,
                       holds: Callable[[Key], bool]) -> list[tuple[ServiceName, int, Slot]]:
        """Slots of this node that no replacement task holds: a release that failed, a take that
        committed although its reply was lost (the retried call then found the slot taken), a
        failed replacement whose failure could not be reported, a slot of our previous lease."""
        ours = [(name, index, slot) for name, by_index in state.slots.items() for index, slot in by_index.items()
                if slot.node == self.ctx.node_id]
        self._released_slots &= {slot.create_revision for _, _, slot in ours}
        return [(name, index, slot) for name, index, slot in ours
                if slot.create_revision not in self._released_slots and not holds((name, slot.instance))]

    async def _tidy(self, *, holds: Callable[[Key], bool]) -> None:
        """Release :meth:`leftover_slots`, each with a compare on its create revision (so never a
        slot taken anew since); a failed replacement's failure is reported first, while its
        rollout is undecided."""
        state = self.ctx.mirror.state()
        for name, index, slot in self.leftover_slots(state, holds=holds):
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
        text = f"instance {job.slot.instance} on {self.ctx.node_id}: {reason}"[:1024]
        marked = False
        try:
            marked = await self.ctx.rollouts.mark_slot_failed(job.spec.name, job.index,
                                                              slot=replace(job.slot, failed=text), lease=job.lease)
        except DaprDockrError as exc:
            log.warning("could not mark replacement slot %d of %s failed: %s", job.index, job.spec.name, exc)
        try:
            await self._rollout_failed(job.spec, text)
        except DaprDockrError as exc:
            log.warning("could not report the failed rollout of %s (%s); retrying", job.spec.name, exc)
            return not marked  # unmarked, the slot would be released unreported: let it go as usual
        return True

    async def _rollout_failed(self, spec: ServiceSpec, reason: str, *, target: str = "") -> None:
        """Tell the rollout towards ``target`` (default: ``spec``'s) that a replacement failed: the
        first agent to report it decides (rollback or pause, by ``spec.update.on_failure``)."""
        outcome = await self.ctx.rollouts.fail_rollout(spec.name, target=target or spec.runtime_hash,
                                                       reason=reason, rollback=spec.update.on_failure == "rollback")
        log.warning("rollout of %s %s: %s", spec.name, outcome or "already decided", reason)

    # ------------------------------------------------------------------ the three kinds
    async def _roll_start_first(self, job: _Job, rec: InstanceRecord, old: ContainerInfo,
                                release: Callable[[], Awaitable[None]]) -> None:
        ctx, records = self.ctx, self.records
        new = await self._start_replacement(job, rec.number, beside=True)
        log.info("rolling %s/%s: replacement %s started beside %s", rec.service, rec.number, new.id[:12],
                 old.id[:12])

        async def follow_old() -> None:
            # the key is busy with this replacement, so no Refresh writes the old container's
            # health meanwhile: an old container that turns unhealthy leaves the routers now
            nonlocal rec
            health = ctx.health.health_of(old, job.spec)
            if health is None or health == rec.health:
                return
            try:
                if await records.write(replace(rec, health=health)):
                    rec = replace(rec, health=health)
            except DaprDockrError as exc:
                log.warning("could not record the health of %s/%s (%s)", rec.service, rec.number, exc)

        await self._await_healthy(job, new, each_round=follow_old)
        written = await ctx.store.update_instance(records.running_record(rec, new, spec=job.spec, healthy=True),
                                                  lease=ctx.lease)
        if not records.confirmed(written):
            log.warning("instance %s/%s is no longer ours; removing its replacement", rec.service, rec.number)
            await ctx.runtime.remove(new.id, grace=0)
            return
        assert written is not None
        log.info("rolled %s/%s onto %s; taking %s out", rec.service, rec.number, new.id[:12], old.id[:12])
        # the replacement is done once no router sends the old one new requests: the slot is
        # free while it drains and stops
        await self.removal.take_out(old, removed_at=written.revision, routed=rec.routable, spec=job.spec,
                                    confirmed=release)

    async def _roll_stop_first(self, job: _Job, rec: InstanceRecord, old: ContainerInfo) -> None:
        records = self.records
        log.info("rolling %s/%s: taking %s out first (stop-first)", rec.service, rec.number, old.id[:12])
        retired = await self.removal.retire(rec, old, reason="rolling update", spec=job.spec)
        if retired is None:
            return
        # the deadline is the new version's (start and health): taking the old one out (confirmed
        # removal, drain, stop) does not count against it
        job = replace(job, deadline=asyncio.get_running_loop().time() + job.spec.update.deadline)
        rec = replace(retired, state="starting")
        new = await self._start_replacement(job, rec.number, beside=False)
        # the record names the new container at once (an agent restart adopts it) but it is routed
        # only once it passed its check for min_healthy, as with start-first
        await records.must_write(replace(records.running_record(rec, new, spec=job.spec), state="starting"))
        await self._await_healthy(job, new)
        await records.must_write(records.running_record(rec, new, spec=job.spec, healthy=True))
        log.info("rolled %s/%s onto %s", rec.service, rec.number, new.id[:12])

    async def _take_over(self, job: _Job, rec: InstanceRecord, *, reason: str) -> None:
        ctx = self.ctx
        new = await self._start_replacement(job, rec.number, beside=True)
        log.info("taking over %s/%s from node %s (%s): started %s", rec.service, rec.number, rec.node,
                 reason, new.id[:12])
        await self._await_healthy(job, new)
        mine = replace(self.records.running_record(rec, new, spec=job.spec, healthy=True), since=time.time(),
                       lease=ctx.lease)
        if not self.records.confirmed(await ctx.store.take_over_instance(mine, lease=ctx.lease)):
            log.info("%s/%s changed before the takeover; removing %s", rec.service, rec.number, new.id[:12])
            await ctx.runtime.remove(new.id, grace=0)
            return
        log.info("took over %s/%s from %s as %s", rec.service, rec.number, rec.node, new.id[:12])

    # ------------------------------------------------------------------ start, and wait for health
    def _abandon_reason(self, job: _Job) -> str:
        """Why the replacement ``job`` should stop now ("": it goes on)."""
        if self.ctx.lease != job.lease:
            return "our lease was replaced (the slot went with the old one)"
        state = self.ctx.mirror.state()
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
                    info = await self.ctx.runtime.start_instance(spec=job.spec, number=number, beside=beside)
                self.started.observe_started(info)
                return info
            except TimeoutError:
                raise ReplacementFailed(f"did not start within {job.spec.update.deadline:g}s") from None
            except ContainerError as exc:
                failures += 1
                if not exc.transient or failures >= START_ATTEMPTS:
                    raise ReplacementFailed(f"could not start: {exc}") from None
                log.warning("starting a replacement of %s/%s failed (%d of %d): %s", job.spec.name, number,
                            failures, START_ATTEMPTS, exc)
            await asyncio.sleep(max(0.0, min(self.start_retry * failures, job.deadline - loop.time())))

    async def _await_healthy(self, job: _Job, c: ContainerInfo,
                             each_round: Callable[[], Awaitable[None]] | None = None) -> None:
        """Return once ``c`` has run and passed its check (without one: kept running) for
        ``update.min_healthy`` seconds; past the replacement's deadline remove it and raise
        :class:`ReplacementFailed`.  Remove it and raise :class:`ReplacementAbandoned` as soon as
        the replacement has no point any more (:meth:`_abandon_reason`)."""
        loop = asyncio.get_running_loop()
        runtime = self.ctx.runtime
        spec = job.spec
        policy = spec.update
        period = min(spec.health.interval, 0.5) if spec.health is not None else 0.25
        healthy_since: float | None = None
        reason = f"not healthy for {policy.min_healthy:g}s within {policy.deadline:g}s"
        while True:
            now = loop.time()
            if why := self._abandon_reason(job):
                log.info("replacement %s of %s/%s abandoned: %s", c.id[:12], c.service, c.number, why)
                await runtime.remove(c.id, grace=0)
                raise ReplacementAbandoned(why)
            current = await runtime.inspect(c.id)
            if current is None or not current.running:
                reason = "the replacement exited"
                break
            if each_round is not None:
                await each_round()
            if await self.ctx.health.probe(c, spec):
                healthy_since = now if healthy_since is None else healthy_since
                if now - healthy_since >= policy.min_healthy:
                    return
            else:
                healthy_since = None
            if now >= job.deadline:
                break
            await asyncio.sleep(max(0.01, min(period, job.deadline - now)))
        log.warning("replacement %s of %s/%s failed: %s", c.id[:12], c.service, c.number, reason)
        await runtime.remove(c.id, grace=0)
        raise ReplacementFailed(reason)
