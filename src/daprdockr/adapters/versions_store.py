"""Specs and their versions in etcd: every write of a spec is a new version (the spec, its history
entry and, when what the containers are made of changed, a rollout record, in one transaction on
the spec key's mod revision); history, rollback, rollout failure and resume.  What is written is
decided in :mod:`daprdockr.core.versioning`; every value read is decoded by
:func:`daprdockr.core.state.decode_value`, as the agents decode it."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.core.jsondata import dumps
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.rollout import HistoryEntry, RolloutRecord
from daprdockr.core.state import Keyed, RawKV, decode_entry, decode_value
from daprdockr.core.versioning import (
    RollBack,
    failure_applies,
    next_version,
    on_failure,
    resumed,
    rollback_source,
    rollback_wanted,
    scaled,
    stored_versions,
    unchanged,
    version_writes,
)
from daprdockr.errors import StoreError, ValidationError

log = logging.getLogger(__name__)
T = TypeVar("T")
UPDATE_ATTEMPTS = 50
Change = Callable[[ServiceSpec | None, str | None], ServiceSpec]


class Conflict:
    """An attempt's compare failed because the key was written meanwhile: read again, try again."""


CONFLICT = Conflict()


async def retry_conflicts(attempt: Callable[[], Awaitable[T | Conflict]], *, failure: str) -> T:
    """``attempt()`` again (after a short random pause) while it returns :data:`CONFLICT`, at most
    :data:`UPDATE_ATTEMPTS` times; then a StoreError saying ``failure``."""
    for n in range(UPDATE_ATTEMPTS):
        outcome = await attempt()
        if not isinstance(outcome, Conflict):
            return outcome
        await asyncio.sleep(random.uniform(0, 0.01 * (n + 1)))
    raise StoreError(failure)


def _mod_revision(kv: RawKV | None) -> int:
    """A key's mod revision, 0 when it is absent (what etcd compares an absent key's as)."""
    return kv.mod_revision if kv is not None else 0


class VersionStore:
    """The specs of ``store``'s cluster, their history and rollout records."""

    def __init__(self, store: EtcdStore) -> None:
        self.store = store
        self.schema = store.schema

    # ------------------------------------------------------------------ specs
    async def get_service(self, name: ServiceName) -> ServiceSpec | None:
        """The spec, ``None`` if absent; a malformed stored spec raises ValidationError."""
        kv = await self.store.get_kv(self.schema.service(name))
        if kv is None:
            return None
        value = decode_value(self.schema, kv)
        assert isinstance(value, ServiceSpec)
        return value

    async def put_service(self, spec: ServiceSpec) -> None:
        """Write ``spec`` whatever is stored (tests and tooling), with its history and rollout records."""
        await self.update_service(spec.name, lambda _current, _problem: spec)

    async def update_service(self, name: ServiceName, change: Change) -> ServiceSpec:
        """Read-modify-write as one transaction on the key's mod revision, retried on conflict.

        ``change(current, problem)`` gets the stored spec (``None`` if absent or malformed, with
        ``problem`` saying why it is malformed) and returns the spec to write; it may raise
        ValidationError, and is called again with fresh data after a concurrent write.  Each write
        is a new version: the spec, its history entry and (when what the containers are made of
        changed) a rollout record, in one transaction; a spec equal to the stored one writes nothing.
        """
        spec = await self.write_version(name, change, cause="set")
        assert spec is not None  # (no guard)
        return spec

    async def write_version(
        self, name: ServiceName, change: Change, *, cause: str, rollout: RolloutRecord | None = None,
        guard: tuple[str, int] | None = None,
    ) -> ServiceSpec | None:
        """:meth:`update_service` with the history entry's ``cause``, a given ``rollout`` record
        (default: a new one when the runtime hash changes), and an optional ``guard``: a key that
        must still be at this mod revision; if it moved, nothing is written and None returned
        (someone else decided meanwhile)."""
        key = self.schema.service(name)

        async def attempt() -> ServiceSpec | Conflict | None:
            kv = await self.store.get_kv(key)
            decoded = None if kv is None else decode_entry(self.schema, kv)
            current = decoded if isinstance(decoded, ServiceSpec) else None
            spec = change(current, decoded if isinstance(decoded, str) else None)
            if spec.name != name:
                raise ValidationError(f"spec names {spec.name} but the key is {name}", field="name")
            if unchanged(current, spec, rollout=rollout):
                return spec  # nothing changes: no new version in the history
            new = next_version(spec, current, await self._versions(name), cause=cause, rollout=rollout,
                               now=time.time())
            compares: list[tuple[str, Literal["mod", "create"], int]] = [(key, "mod", _mod_revision(kv))]
            if guard is not None:
                compares.append((guard[0], "mod", guard[1]))
            if await self.store.transaction(compares=compares, ops=version_writes(self.schema, spec, new), what=cause):
                return spec
            if guard is not None and _mod_revision(await self.store.get_kv(guard[0])) != guard[1]:
                return None  # (a guard key deleted meanwhile moved too: mod revision 0)
            return CONFLICT  # written concurrently: again

        return await retry_conflicts(
            attempt, failure=f"{name} changed {UPDATE_ATTEMPTS} times while it was being updated; try again")

    async def scale(self, name: ServiceName, instances: int) -> ServiceSpec:
        """Write the stored spec with ``instances`` instances as a new version (cause ``scale``);
        NotFoundError if there is no spec, ConflictError if the stored one is invalid."""
        spec = await self.write_version(
            name, lambda cur, bad: scaled(name, cur, bad, instances=instances), cause="scale")
        assert spec is not None  # (no guard)
        return spec

    async def delete_service(self, name: ServiceName) -> bool:
        """Delete the spec (a transaction on its mod revision, retried); False if it was absent."""
        key = self.schema.service(name)

        async def attempt() -> bool | Conflict:
            kv = await self.store.get_kv(key)
            if kv is None:
                return False
            return True if await self.delete_service_at(name, kv.mod_revision) else CONFLICT

        return await retry_conflicts(
            attempt, failure=f"{name} changed {UPDATE_ATTEMPTS} times while it was being deleted; try again")

    async def delete_service_at(self, name: ServiceName, revision: int) -> bool:
        """Delete the spec iff its key is still at mod ``revision`` (one transaction); False if it moved."""
        key = self.schema.service(name)
        # the rollout record goes with the spec (history stays: a re-created service goes on from it)
        return bool(await self.store.transaction(compares=[(key, "mod", revision)],
                                                 ops=[(key, None, 0), (self.schema.rollout(name), None, 0)],
                                                 what="delete service"))

    async def _versions(self, name: ServiceName) -> list[int]:
        return stored_versions(await self.store.keys_under(self.schema.history(name)))

    # ------------------------------------------------------------------ history
    async def history(self, name: ServiceName) -> list[HistoryEntry]:
        """The kept versions of ``name``'s spec, oldest first (malformed ones logged and skipped)."""
        kvs, _ = await self.store.read_prefix(self.schema.history(name))
        entries = []
        for kv in kvs:
            decoded = decode_entry(self.schema, kv)
            if isinstance(decoded, Keyed) and isinstance(decoded.value, HistoryEntry):
                entries.append(decoded.value)
            else:
                log.warning("skipping malformed history key %s: %s", kv.key, decoded)
        return sorted(entries, key=lambda e: e.version)

    async def rollback(self, name: ServiceName, *, to: int | None = None) -> tuple[ServiceSpec, int]:
        """Write version ``to`` (default: the one before the current) as a new version; returns
        the spec and the version it was taken from."""
        source = rollback_source(name, await self.history(name), to=to)
        spec = ServiceSpec.from_dict(source.spec, name=name)
        await self.write_version(name, lambda _cur, _bad: spec, cause=f"rollback to {source.version}")
        return spec, source.version

    # ------------------------------------------------------------------ rollouts
    async def rollout(self, name: ServiceName) -> tuple[RolloutRecord | None, int]:
        """The rollout record and its key's mod revision (``None, 0``: none); a malformed one raises ValidationError."""
        kv = await self.store.get_kv(self.schema.rollout(name))
        if kv is None:
            return None, 0
        decoded = decode_value(self.schema, kv)
        assert isinstance(decoded, Keyed) and isinstance(decoded.value, RolloutRecord)
        return decoded.value, kv.mod_revision

    async def fail_rollout(self, name: ServiceName, *, target: str, reason: str, rollback: bool) -> str:
        """A replacement of the rollout to ``target`` failed: roll back to the previous version
        (what rolled out only: :func:`~daprdockr.core.rollout.rollback_spec`), or pause
        (:func:`~daprdockr.core.versioning.on_failure`).  Only the first agent to report it acts
        (compare on the rollout record); returns what happened: ``rolled-back``, ``paused``, or
        ``""`` (already handled)."""
        record, mod = await self.rollout(name)
        if record is None or not failure_applies(record, target=target):
            return ""
        wanted = rollback_wanted(record, rollback=rollback)
        previous = {e.version: e for e in await self.history(name)}.get(wanted) if wanted else None
        outcome = on_failure(name, record, reason=reason, rollback=rollback, previous=previous, now=time.time())
        if isinstance(outcome, RollBack):
            if await self.write_version(name, lambda cur, _bad: outcome.spec(cur),
                                        cause=f"automatic rollback to {outcome.source}", rollout=outcome.record,
                                        guard=(self.schema.rollout(name), mod)) is None:
                return ""
            log.warning("rollout of %s to version %d failed (%s): rolled back to version %d", name,
                        record.version, outcome.record.reason, outcome.source)
            return "rolled-back"
        if outcome.problem:
            log.warning("version %d of %s in the history is not a valid spec: %s", record.previous_version, name,
                        outcome.problem)
        if await self._put_rollout(name, outcome.record, mod=mod, what="pause rollout"):
            log.warning("rollout of %s to version %d failed (%s): paused", name, record.version,
                        outcome.record.reason)
            return "paused"
        return ""

    async def resume(self, name: ServiceName) -> None:
        record, mod = await self.rollout(name)
        if not await self._put_rollout(name, resumed(name, record, now=time.time()), mod=mod, what="resume rollout"):
            raise StoreError(f"the rollout of {name} changed meanwhile; try again")

    async def _put_rollout(self, name: ServiceName, record: RolloutRecord, *, mod: int, what: str) -> bool:
        """Write the rollout record iff its key is still at mod revision ``mod``."""
        key = self.schema.rollout(name)
        return bool(await self.store.transaction(compares=[(key, "mod", mod)],
                                                 ops=[(key, dumps(record.to_dict()), 0)], what=what))
