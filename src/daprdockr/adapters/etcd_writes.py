"""Writes: plain puts (node records, applied revisions) and transactions, instance ownership among
them.  *claim* = "create the key only if it does not exist, bound to my lease"; *update/release* =
"only if the key's create revision is still the one my claim created, and the key is still on the
lease it was read with" (so a key that expired and was re-claimed, or taken over, by another node
is never touched).  Conditional writes return the :class:`~daprdockr.core.mirror.WatchEvent` they
produced, for read-your-writes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import aetcd
import aetcd.rpc as aetcd_rpc
import aetcd.transactions as aetcd_txn

from daprdockr.adapters.etcd_pool import EtcdPool
from daprdockr.core.jsondata import dumps
from daprdockr.core.mirror import WatchEvent
from daprdockr.core.records import InstanceRecord, NodeRecord
from daprdockr.errors import StoreError


def _txn_revision(responses: list[Any]) -> int:
    """The store revision a successful one-operation transaction created."""
    op = responses[0]
    for field in ("response_put", "response_delete_range"):
        if op.HasField(field):
            return int(getattr(op, field).header.revision)
    raise StoreError(f"unexpected transaction response {op!r}")


class _LeaseIs(aetcd_txn.BaseCompare):  # type: ignore[misc]
    """Compare on the lease a key is bound to (etcd >= 3.3; aetcd has no helper for it)."""

    def build_compare(self, compare: Any) -> None:
        compare.target = aetcd_rpc.Compare.LEASE
        compare.lease = int(self.value)


class EtcdWrites(EtcdPool):
    """Puts, transactions and the instance claims built on them."""

    async def _write_if(
        self, key: str, *, compare: Literal["create", "mod"], equals: int, value: bytes | None, lease: int = 0,
        what: str, on_lease: int = 0, created: int = 0,
    ) -> WatchEvent | None:
        """One transaction: put ``value`` (delete when ``None``) iff the key's create or mod revision
        equals ``equals`` (0: the key is absent).  Returns the event the write produced, ``None``
        when the compare failed.  Callers hand the event on (read-your-writes) after this returns,
        outside the timed and retried call.  With ``on_lease`` the key must also still be bound to
        that lease (a key another node took over keeps its create revision but not its lease);
        ``created`` is the key's create revision when the compare does not tell it."""
        k = key.encode()

        async def op(c: aetcd.Client) -> int:
            target = c.transactions.create(k) if compare == "create" else c.transactions.mod(k)
            checks = [target == equals] + ([_LeaseIs(k) == on_lease] if on_lease else [])
            success = [c.transactions.put(k, value, lease=lease or None) if value is not None
                       else c.transactions.delete(k)]
            ok, responses = await c.transaction(compare=checks, success=success, failure=[])
            return _txn_revision(responses) if ok else 0

        async with self._writes:  # (waiting here is outside the call's timeout)
            revision = await self._call(op, what=what)
        if not revision:
            return None
        if value is None:
            return WatchEvent(kind="delete", key=key, revision=revision)
        created = created or (revision if equals == 0 else (equals if compare == "create" else 0))
        return WatchEvent(kind="put", key=key, value=value, revision=revision, lease=lease, create_revision=created)

    async def transaction(
        self, *, compares: Sequence[tuple[str, Literal["mod", "create"], int]],
        ops: Sequence[tuple[str, bytes | None, int]], what: str,
    ) -> int:
        """One etcd transaction: if every ``(key, mod|create, revision)`` compare holds, apply every
        ``(key, value or None to delete, lease)``; returns the new revision, or 0 if a compare failed."""

        async def op(c: aetcd.Client) -> int:
            checks = [(c.transactions.mod(k.encode()) if kind == "mod" else c.transactions.create(k.encode())) == rev
                      for k, kind, rev in compares]
            success = [c.transactions.put(k.encode(), v, lease=lease or None) if v is not None
                       else c.transactions.delete(k.encode()) for k, v, lease in ops]
            ok, responses = await c.transaction(compare=checks, success=success, failure=[])
            return _txn_revision(responses) if ok else 0

        return await self._call(op, what=what)

    async def put_applied(self, node_id: str, revision: int, *, lease: int) -> None:
        """Publish the etcd revision whose removals this node's nginx and DNS have applied."""
        key = self.schema.applied(node_id).encode()
        await self._call(lambda c: c.put(key, dumps({"revision": revision}), lease=lease), what="put applied")

    async def put_node(self, node: NodeRecord, *, lease: int) -> None:
        key = self.schema.node(node.node_id).encode()
        await self._call(lambda c: c.put(key, dumps(node.to_dict()), lease=lease), what="put node")

    async def claim_instance(self, rec: InstanceRecord, *, lease: int) -> WatchEvent | None:
        """Create the instance key iff absent, on ``lease``; ``None`` if another node has it."""
        return await self._write_if(self.schema.instance(rec.service, rec.number), compare="create", equals=0,
                                    value=dumps(rec.to_dict()), lease=lease, what="claim instance")

    async def update_instance(self, rec: InstanceRecord, *, lease: int) -> WatchEvent | None:
        """Overwrite our own instance key; ``None`` if it is no longer the key we created, or no
        longer on the lease ``rec`` was read with (another node took it over)."""
        return await self._write_if(self.schema.instance(rec.service, rec.number), compare="create",
                                    equals=rec.create_revision, value=dumps(rec.to_dict()), lease=lease,
                                    what="update instance", on_lease=rec.lease)

    async def release_instance(self, rec: InstanceRecord) -> WatchEvent | None:
        """Delete our own instance key (only if it is still the one our claim created, on our lease)."""
        return await self._write_if(self.schema.instance(rec.service, rec.number), compare="create",
                                    equals=rec.create_revision, value=None, what="release instance",
                                    on_lease=rec.lease)

    async def take_over_instance(self, rec: InstanceRecord, *, lease: int) -> WatchEvent | None:
        """Move an instance key onto our ``lease`` with our record ``rec``, iff it is unchanged since
        it was read (``rec.mod_revision``): a drained node's instance handed over, or a malformed or
        lease-less key rewritten from our container."""
        return await self._write_if(self.schema.instance(rec.service, rec.number), compare="mod",
                                    equals=rec.mod_revision, value=dumps(rec.to_dict()), lease=lease,
                                    what="take over instance", created=rec.create_revision)

    async def purge_instance(self, *, key: str, mod_revision: int) -> WatchEvent | None:
        """Delete an unusable instance key (malformed, or bound to no lease) if it is unchanged."""
        return await self._write_if(key, compare="mod", equals=mod_revision, value=None, what="purge instance")

    async def put_raw(self, key: str, value: bytes, *, lease: int = 0) -> None:
        """Write an arbitrary key, optionally on a lease (tests and tooling only)."""
        await self._call(lambda c: c.put(key.encode(), value, lease=lease or None), what="put")
