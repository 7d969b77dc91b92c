"""The lifecycle records in etcd: spec versions (history, rollback, rollout records, from
:class:`~daprdockr.adapters.versions_store.VersionStore`), replacement slots, drain markers.
Every write is a transaction (compares on mod or create revisions), so agents and operators can
act at the same time without a coordinator.  See :mod:`daprdockr.core.rollout`."""

from __future__ import annotations

import time

from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.jsondata import dumps
from daprdockr.core.names import ServiceName
from daprdockr.core.rollout import Slot
from daprdockr.core.state import ClusterState, value_json
from daprdockr.errors import NotFoundError, ValidationError


def _unknown(node_id: str, why: str, state: ClusterState) -> NotFoundError:
    return NotFoundError(f"node {node_id} is not known: {why} (live nodes: {', '.join(sorted(state.nodes)) or 'none'})")


class LifecycleStore(VersionStore):
    """The rollout coordinator of the reconciler (versions, failure reports and slots) and drain markers."""

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

    async def drain_known(self, node_id: str, *, on: bool, state: ClusterState) -> None:
        """An operator's drain (``on``) or undrain of ``node_id``, as ``state`` knows it: a drain
        needs a live node or one holding instances, an undrain a live or draining one (else
        NotFoundError, and nothing is written)."""
        if on and node_id not in state.nodes and not state.held_by(node_id):
            raise _unknown(node_id, "no live agent has that id and it holds no instance", state)
        if not on and node_id not in state.draining and node_id not in state.nodes:
            raise _unknown(node_id, "no live agent has that id and it is not draining", state)
        await self.drain(node_id, on=on)

    async def end_shutdown_drain(self, node_id: str) -> bool:
        """Lift ``node_id``'s drain marker if its own shutdown set it (an operator's stays)."""
        kv = await self.store.get_kv(self.schema.drain(node_id))
        if kv is None:
            return False
        try:
            data = value_json(kv)
        except ValidationError:
            data = None
        by = data.get("by") if isinstance(data, dict) else None
        if by != "shutdown":
            return False
        return bool(await self.store.transaction(compares=[(kv.key, "mod", kv.mod_revision)],
                                                 ops=[(kv.key, None, 0)], what="undrain"))
