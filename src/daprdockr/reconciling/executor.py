"""The actions of one instance key (all but replacements: :mod:`.replacements`).

etcd writes per started instance: the claim (create-if-absent on our lease, state ``starting``)
and one update to ``running`` with container id and published ports.  A container that crashed is
restarted without waiting for etcd: started again as it is (``docker start``) while it is the
spec's and not in a crash loop, else replaced; one Docker cannot remove goes to the background
reaper (:mod:`daprdockr.adapters.container_reaper`) and never holds its instance up.  Every key
has one :class:`~daprdockr.core.retry.KeyRetry` entry: crash-restart backoff (reset after a
healthy run, as long as the engine says the run lasted; with jitter) and a hold after a failed action.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from daprdockr.adapters.docker_runtime import ContainerRuntime
from daprdockr.core.containers import ContainerInfo
from daprdockr.core.model import ServiceSpec
from daprdockr.core.planning.actions import Action, Adopt, Claim, Key, Purge, Refresh, Release, Repair, Start, Stop
from daprdockr.core.records import InstanceRecord
from daprdockr.core.retry import KeyRetry
from daprdockr.errors import ContainerError, DaprDockrError, RuntimeUnavailableError, StoreError
from daprdockr.reconciling.context import ReconcileContext
from daprdockr.reconciling.parts import Reaping, Records, Removal, Started

log = logging.getLogger(__name__)

START_AGAIN_FOR = 30.0  # seconds of docker starts failing on an unreachable engine before a container is replaced
START_AGAIN_REFUSED = 3.0  # seconds of docker starts refused by an answering engine before a container is replaced
START_AGAIN_LOOP = 2  # quick exits in a row that an exited container is started again as it is for


async def remove_for_good(runtime: ContainerRuntime, container_id: str) -> None:
    """Remove a container and check it is gone (Docker answers a removal already under way
    with success while the container stays)."""
    await runtime.remove(container_id, grace=0)
    if await runtime.inspect(container_id) is not None:
        raise ContainerError(f"container {container_id[:12]} is still there", transient=True)


class ActionExecutor:
    def __init__(self, *, ctx: ReconcileContext, records: Records, removal: Removal, started: Started,
                 reaper: Reaping) -> None:
        self.ctx = ctx
        self.records = records
        self.removal = removal
        self.started = started
        self.reaper = reaper
        self._exits_counted: set[str] = set()  # exited containers whose exit the crash backoff counted
        self._start_again_failing: dict[str, float] = {}  # container id -> first failed docker start
        self._start_again_refused: dict[str, float] = {}  # container id -> first docker start the engine refused

    async def execute(self, action: Action) -> None:
        ctx, records = self.ctx, self.records
        if isinstance(action, Claim):
            await self._claim(action.key, action.spec)
        elif isinstance(action, Start):
            await self._start(action.record, action.spec, old=action.old, reason=action.reason)
        elif isinstance(action, Adopt):
            await self._adopt(action)
        elif isinstance(action, Refresh):
            await records.must_write(records.running_record(action.record, action.container, spec=action.spec))
        elif isinstance(action, Release):
            # etcd first: if the key cannot be deleted (etcd unreachable) this raises and the
            # container keeps serving; it stops only once no node routes to it any more
            released = await ctx.store.release_instance(action.record)
            if records.confirmed(released):
                log.info("released %s/%s (%s)", action.record.service, action.record.number, action.reason)
            if action.container is not None:
                await self.removal.take_out(action.container, removed_at=released.revision if released else 0,
                                            routed=action.record.routable, spec=action.spec)
            ctx.retries.pop(action.record.key_tuple, None)
        elif isinstance(action, Repair):
            await self._repair(action)
        elif isinstance(action, Purge):
            if not records.confirmed(await ctx.store.purge_instance(key=action.bad.key,
                                                                    mod_revision=action.bad.mod_revision)):
                raise StoreError(f"{action.bad.key} changed before it could be deleted", transient=True)
            log.warning("deleted unusable instance key %s (%s)", action.bad.key, action.bad.reason)
        else:
            assert isinstance(action, Stop), action  # (Roll and TakeOver: the replacement runner's)
            log.info(
                "stopping container %s of %s/%s: %s",
                action.container.id[:12], action.container.service, action.container.number, action.reason,
            )
            removed_at = await self.removal.left_routing_at(action.container, until=action.removed_at)
            await self.removal.take_out(action.container, removed_at=removed_at, routed=bool(removed_at),
                                        spec=action.spec)

    def forget_unlisted(self, listed: frozenset[str]) -> None:
        """Drop what is kept of containers a new listing no longer shows."""
        self._exits_counted &= listed
        self._start_again_failing = {i: t for i, t in self._start_again_failing.items() if i in listed}
        self._start_again_refused = {i: n for i, n in self._start_again_refused.items() if i in listed}

    def engine_away(self) -> None:
        """The engine does not answer (it is restarting): what it refused while it went down, and
        the exits it caused, say nothing about the containers.  A dying dockerd answers for a moment
        with errors ("transport is closing", "failed to update store ... libnetwork") after it
        killed every container; counted, they had every instance re-created once it was back."""
        retries = self.ctx.retries
        self._start_again_refused.clear()
        self._exits_counted.clear()
        for k, e in list(retries.items()):
            retries[k] = replace(e, crashes=0)

    async def _ran_for(self, old: ContainerInfo) -> float | None:
        """How long the exited container ``old`` ran, by the engine's clock (``None``: unknown).
        The time since our start would also count how late this agent noticed the exit: a quick
        crash noticed seconds late by a busy agent passed for a healthy run, and its crash loop
        restarted hot with the backoff reset every time."""
        if old.ran_for is not None:
            return old.ran_for
        try:
            seen = await self.ctx.runtime.inspect(old.id)
        except DaprDockrError as exc:
            log.debug("inspect %s: %s", old.id[:12], exc)
            return None
        return seen.ran_for if seen is not None and seen.id == old.id else None

    def _why_not_start_again(self, old: ContainerInfo, spec: ServiceSpec, *, crashes: int) -> str:
        """Why the exited container ``old`` is not started again as it is ("" when it is)."""
        if old.spec_hash != spec.runtime_hash:
            return "its spec changed"
        if old.doomed:
            return "Docker is removing it"
        if crashes > START_AGAIN_LOOP:
            return f"it exited {crashes} times in a row soon after a start"
        failing = self._start_again_failing.get(old.id)
        if failing is not None and self.ctx.clock() - failing > START_AGAIN_FOR:
            return f"docker start has failed for {START_AGAIN_FOR:g}s"
        refused = self._start_again_refused.get(old.id)
        if refused is not None and self.ctx.clock() - refused >= START_AGAIN_REFUSED:
            return f"the engine refused to start it for {START_AGAIN_REFUSED:g}s"
        return ""

    async def _start_again(self, rec: InstanceRecord, spec: ServiceSpec, old: ContainerInfo) -> None:
        """``docker start`` our exited container ``old`` as it is (still the spec's; its writable
        layer kept, as Docker's own restart policy does): an engine or host restart stopped every
        container, and each comes back as it was.  A failure keeps the container and fails the
        action (retried with backoff) for up to ``START_AGAIN_FOR`` seconds while the engine is
        unreachable, and ``START_AGAIN_REFUSED`` seconds when it answers with an error; a
        container that keeps exiting soon after its start (more than ``START_AGAIN_LOOP`` times in
        a row: a crash loop) is replaced by a new one."""
        ctx = self.ctx
        log.info("starting %s/%s's exited container %s again", rec.service, rec.number, old.id[:12])
        try:
            info = await ctx.runtime.restart_instance(old, spec=spec)
        except RuntimeUnavailableError:
            self._start_again_failing.setdefault(old.id, ctx.clock())  # the engine is away: try again
            self.engine_away()
            raise
        except DaprDockrError as exc:  # (the engine may be going down: tried again for a while)
            self._start_again_failing.setdefault(old.id, ctx.clock())
            # a terminal refusal (it can never start again) replaces it on the next pass
            if exc.transient:
                self._start_again_refused.setdefault(old.id, ctx.clock())
            else:
                self._start_again_refused[old.id] = float("-inf")
            raise
        self._exits_counted.discard(old.id)
        self._start_again_failing.pop(old.id, None)
        self._start_again_refused.pop(old.id, None)
        ctx.retries[rec.key_tuple] = ctx.policy.started(ctx.retries.get(rec.key_tuple, KeyRetry()), now=ctx.clock())
        self.started.observe_started(info)
        if not await self.records.write(replace(self.records.running_record(rec, info, spec=spec), since=time.time())):
            log.warning("lost %s/%s while starting it again; removing the container", rec.service, rec.number)
            await ctx.runtime.remove(info.id, grace=0)
            return
        log.info("running %s/%s again in its container %s", rec.service, rec.number, info.id[:12])

    async def _adopt(self, action: Adopt) -> None:
        c, records = action.container, self.records
        if action.record is not None:
            await records.must_write(records.running_record(action.record, c, spec=action.spec))
            log.info("adopted %s/%s (container %s) on the new lease", c.service, c.number, c.id[:12])
            return
        rec = records.running_record(records.fresh_record(c), c, spec=action.spec)
        if not records.confirmed(await self.ctx.store.claim_instance(rec, lease=self.ctx.lease)):
            # the key exists after all (our view is behind): let the watch bring the truth, then
            # re-plan; never stop a running container on a guess
            raise StoreError(f"{c.service}/{c.number} is taken in etcd; not adopting container {c.id[:12]}",
                             transient=True)
        log.info("adopted running container %s as %s/%s", c.id[:12], c.service, c.number)

    async def _repair(self, action: Repair) -> None:
        """Rewrite a malformed (or lease-less) key from our running container onto our lease, iff
        the key is unchanged since it was read (a compare on its mod revision)."""
        c, records, lease = action.container, self.records, self.ctx.lease
        rec = replace(records.running_record(records.fresh_record(c), c, spec=action.spec),
                      create_revision=action.bad.create_revision,
                      mod_revision=action.bad.mod_revision, lease=lease)
        if not records.confirmed(await self.ctx.store.take_over_instance(rec, lease=lease)):
            raise StoreError(f"{action.bad.key} changed before it could be rewritten", transient=True)
        log.warning("rewrote malformed instance key %s from container %s (%s)", action.bad.key, c.id[:12],
                    action.bad.reason)

    async def _claim(self, key: Key, spec: ServiceSpec) -> None:
        service, number = key
        ctx = self.ctx
        rec = InstanceRecord(
            service=service, number=number, node=ctx.node_id, address=ctx.address,
            state="starting", spec_hash=spec.runtime_hash, since=time.time(),
        )
        lease = ctx.lease
        written = await ctx.store.claim_instance(rec, lease=lease)
        if not self.records.confirmed(written):
            log.debug("lost the race for %s/%s", service, number)
            return
        assert written is not None
        log.info("claimed %s/%s", service, number)
        await self._start(replace(rec, create_revision=written.create_revision, lease=lease), spec, old=None,
                          reason="claimed")

    async def _start(
        self, rec: InstanceRecord, spec: ServiceSpec, *, old: ContainerInfo | None, reason: str
    ) -> None:
        ctx, retries = self.ctx, self.ctx.retries
        key = rec.key_tuple
        entry = retries.get(key, KeyRetry())
        if old is not None and not old.running:
            # a crash: restart without waiting for etcd, and back off if it crashes in a loop
            if old.id not in self._exits_counted:  # (a retried start of the same exit counts once)
                self._exits_counted.add(old.id)
                ran_for = await self._ran_for(old)
                entry = retries[key] = ctx.policy.crashed(entry, now=ctx.clock(), rand=ctx.rand(), ran_for=ran_for)
            why_not = self._why_not_start_again(old, spec, crashes=entry.crashes)
            if not why_not:
                await self._start_again(rec, spec, old)
                return
            log.info("restarting %s/%s: %s (a new container: %s)", rec.service, rec.number, reason, why_not)
            try:
                await self.removal.stop_container(old, grace=0, spec=spec)
            except DaprDockrError as exc:  # the new container starts beside it, under a fresh name
                self.reaper.add(old, error=str(exc))
        elif old is not None:
            log.info("replacing container of %s/%s: %s", rec.service, rec.number, reason)
            if reason == "unhealthy":  # a restart for failing its checks backs off like a crash
                entry = retries[key] = ctx.policy.crashed(entry, now=ctx.clock(), rand=ctx.rand())
            retired = await self.removal.retire(rec, old, reason=reason, spec=spec)
            if retired is None:
                return
            rec = retired
        try:
            info = await ctx.runtime.start_instance(spec=spec, number=rec.number)
        except DaprDockrError as exc:
            now = ctx.clock()
            entry = retries[key] = ctx.policy.start_failed(entry, now=now, rand=ctx.rand(), terminal=not exc.transient)
            log.warning(
                "starting %s/%s failed (%d times, retry in %.1fs): %s",
                rec.service, rec.number, entry.crashes, entry.not_before - now, exc,
            )
            await self.records.write(
                replace(rec, state="failed", error=str(exc), container_id="", ports=(), since=time.time())
            )
            return
        retries[key] = ctx.policy.started(entry, now=ctx.clock())
        self.started.observe_started(info)
        if not await self.records.write(self.records.running_record(rec, info, spec=spec)):
            log.warning("lost %s/%s while starting it; removing the container", rec.service, rec.number)
            await ctx.runtime.remove(info.id, grace=0)
            return
        log.info("running %s/%s as %s (%s)", rec.service, rec.number, info.id[:12], reason)
