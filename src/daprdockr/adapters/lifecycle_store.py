"""The lifecycle records in etcd: spec history and rollback, rollout state, replacement slots,
drain markers.  Every write is a transaction (compares on mod or create revisions), so agents and
operators can act at the same time without a coordinator.  See :mod:`daprdockr.core.rollout`."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.core.model import ServiceSpec, dumps
from daprdockr.core.names import ServiceName
from daprdockr.core.rollout import HistoryEntry, RolloutRecord, Slot, rollback_spec
from daprdockr.errors import NotFoundError, StoreError, ValidationError

log = logging.getLogger(__name__)
REASON_LIMIT = 1024  # characters of a failure's reason kept in the rollout record


class LifecycleStore:
    def __init__(self, store: EtcdStore) -> None:
        self.store = store
        self.schema = store.schema

    # ------------------------------------------------------------------ history
    async def history(self, name: ServiceName) -> list[HistoryEntry]:
        """The kept versions of ``name``'s spec, oldest first."""
        kvs, _ = await self.store.read_prefix(self.schema.history(name))
        entries = []
        for kv in kvs:
            try:
                entries.append(HistoryEntry.from_dict(json.loads(kv.value)))
            except (ValueError, ValidationError) as exc:
                log.warning("skipping malformed history key %s: %s", kv.key, exc)
        return sorted(entries, key=lambda e: e.version)

    async def rollback(self, name: ServiceName, *, to: int | None = None) -> tuple[ServiceSpec, int]:
        """Write version ``to`` (default: the one before the current) as a new version; returns
        the spec and the version it was taken from."""
        entries = await self.history(name)
        if not entries:
            raise NotFoundError(f"{name} has no history")
        if to is None:
            if len(entries) < 2:
                raise NotFoundError(f"{name} has no version before {entries[-1].version}")
            source = entries[-2]
        else:
            found = [e for e in entries if e.version == to]
            if not found:
                raise NotFoundError(f"{name} has no version {to} (kept: {', '.join(str(e.version) for e in entries)})")
            source = found[0]
        spec = ServiceSpec.from_dict(source.spec, name=name)
        await self.store.write_version(name, lambda _cur, _bad: spec, cause=f"rollback to {source.version}")
        return spec, source.version

    # ------------------------------------------------------------------ rollouts
    async def rollout(self, name: ServiceName) -> tuple[RolloutRecord | None, int]:
        kv = await self.store.get_kv(self.schema.rollout(name))
        if kv is None:
            return None, 0
        return RolloutRecord.from_dict(json.loads(kv.value)), kv.mod_revision

    async def fail_rollout(self, name: ServiceName, *, target: str, reason: str, rollback: bool) -> str:
        """A replacement of the rollout to ``target`` failed: roll back to the previous version
        (what rolled out only: :func:`~daprdockr.core.rollout.rollback_spec`), or pause.  Only the
        first agent to report it acts (compare on the rollout record); returns what happened:
        ``rolled-back``, ``paused``, or ``""`` (already handled).  A rollback with no previous
        version to go to pauses, and the reason says why."""
        record, mod = await self.rollout(name)
        if record is None or record.target != target or record.state == "paused":
            return ""
        reason = reason[:REASON_LIMIT]
        if rollback and record.state == "rolling":
            previous = None
            if record.previous_version:
                previous = {e.version: e for e in await self.history(name)}.get(record.previous_version)
            try:
                old = ServiceSpec.from_dict(previous.spec, name=name) if previous is not None else None
            except ValidationError as exc:
                log.warning("version %d of %s in the history is not a valid spec: %s", record.previous_version,
                            name, exc)
                old = None
            if previous is not None and old is not None:
                back = RolloutRecord(version=0, target=old.runtime_hash, previous_version=record.version,
                                     previous=record.target, state="rolled-back", reason=reason, at=time.time())
                guard = (self.schema.rollout(name), mod)
                if await self.store.write_version(name, lambda cur, _bad: rollback_spec(cur, old),
                                                  cause=f"automatic rollback to {previous.version}", rollout=back,
                                                  guard=guard) is not None:
                    log.warning("rollout of %s to version %d failed (%s): rolled back to version %d", name,
                                record.version, reason, previous.version)
                    return "rolled-back"
                return ""
            why = (f"version {record.previous_version} is not in the history" if record.previous_version
                   else "no earlier version is known")
            reason = f"{reason}; paused instead of rolled back: {why}"
        paused = replace(record, state="paused", reason=reason, at=time.time())
        if await self.store.transaction(compares=[(self.schema.rollout(name), "mod", mod)],
                                        ops=[(self.schema.rollout(name), dumps(paused.to_dict()), 0)],
                                        what="pause rollout"):
            log.warning("rollout of %s to version %d failed (%s): paused", name, record.version, reason)
            return "paused"
        return ""

    async def resume(self, name: ServiceName) -> None:
        record, mod = await self.rollout(name)
        if record is None or record.state != "paused":
            raise NotFoundError(f"{name} has no paused rollout")
        resumed = replace(record, state="rolling", reason="", at=time.time())
        if not await self.store.transaction(compares=[(self.schema.rollout(name), "mod", mod)],
                                            ops=[(self.schema.rollout(name), dumps(resumed.to_dict()), 0)],
                                            what="resume rollout"):
            raise StoreError(f"the rollout of {name} changed meanwhile; try again")

    # ------------------------------------------------------------------ slots
    async def take_slot(self, name: ServiceName, *, parallel: int, slot: Slot, lease: int) -> tuple[int, int]:
        """A free replacement slot (1..``parallel``) on ``lease``: its index and create revision,
        or ``(0, 0)`` if all are taken.  (A take whose reply was lost leaves a slot on our lease
        that no replacement holds: the reconciler releases such slots.)"""
        for index in range(1, parallel + 1):
            key = self.schema.slot(name, index)
            revision = await self.store.transaction(compares=[(key, "create", 0)],
                                                    ops=[(key, dumps(slot.to_dict()), lease)], what="take slot")
            if revision:
                return index, revision
        return 0, 0

    async def mark_slot_failed(self, name: ServiceName, index: int, *, slot: Slot, lease: int) -> bool:
        """Write ``slot`` (with its ``failed`` reason) into our slot ``index``, iff it is still the
        slot we took (its create revision is ``slot.create_revision``)."""
        key = self.schema.slot(name, index)
        return bool(await self.store.transaction(compares=[(key, "create", slot.create_revision)],
                                                 ops=[(key, dumps(slot.to_dict()), lease)], what="mark slot failed"))

    async def release_slot(self, name: ServiceName, index: int, *, create_revision: int) -> bool:
        """Delete slot ``index`` iff it is still the one created at ``create_revision`` (ours): a
        retried release, or one after our lease expired, never deletes a slot another agent took
        since.  False: it was not there (any more)."""
        key = self.schema.slot(name, index)
        return bool(await self.store.transaction(compares=[(key, "create", create_revision)], ops=[(key, None, 0)],
                                                 what="release slot"))

    # ------------------------------------------------------------------ drain
    async def drain(self, node_id: str, *, on: bool, shutdown: bool = False) -> None:
        """Set (``on``) or lift the drain marker of ``node_id``; ``shutdown``: set by the node's own
        --drain-on-shutdown, so its next start lifts it."""
        key = self.schema.drain(node_id)
        value = dumps({"since": time.time(), "by": "shutdown" if shutdown else "operator"}) if on else None
        await self.store.transaction(compares=[], ops=[(key, value, 0)], what="drain" if on else "undrain")

    async def end_shutdown_drain(self, node_id: str) -> bool:
        """Lift ``node_id``'s drain marker if its own shutdown set it (an operator's stays)."""
        kv = await self.store.get_kv(self.schema.drain(node_id))
        if kv is None:
            return False
        try:
            by = json.loads(kv.value).get("by")
        except (ValueError, AttributeError):
            by = None
        if by != "shutdown":
            return False
        return bool(await self.store.transaction(compares=[(kv.key, "mod", kv.mod_revision)],
                                                 ops=[(kv.key, None, 0)], what="undrain"))
