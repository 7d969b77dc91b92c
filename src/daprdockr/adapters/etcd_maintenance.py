"""etcd's maintenance API for the housekeeper and ``daprdockr status``: member status, alarms,
and compaction.

aetcd 1.0's ``status()`` drops ``dbSizeInUse`` and lists the members on every call, and its
``list_alarms()`` is an async generator under a decorator meant for coroutines, so status and
alarms go to etcd's gRPC Maintenance service directly (the store client's ``unary``: its timeout,
channel, auth token and ``hasleader`` metadata), through :meth:`EtcdStore.call` (failover, errors
translated); compaction is aetcd's own ``compact()``.
etcd's API does not expose the member's ``--quota-backend-bytes``: the agents take it as an option.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import aetcd.exceptions as aetcd_exc
import aetcd.rpc as aetcd_rpc
import grpc

from daprdockr.adapters.etcd_errors import raise_as_aetcd
from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.errors import StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MemberStatus:
    member: int  # the answering member's id
    db_size: int
    db_size_in_use: int
    revision: int  # the store revision when it answered
    leader: int


class EtcdMaintenance:
    def __init__(self, store: EtcdStore) -> None:
        self.store = store

    async def status(self) -> MemberStatus:
        async def op(c: Any) -> MemberStatus:
            r = await c.unary(lambda s: s.maintenance.Status, aetcd_rpc.StatusRequest())
            return MemberStatus(member=int(r.header.member_id), db_size=int(r.dbSize),
                                db_size_in_use=int(r.dbSizeInUse), revision=int(r.header.revision),
                                leader=int(r.leader))

        return await self.store.call(_translated(op), what="status")

    async def alarms(self) -> list[tuple[int, str]]:
        """Every member's active alarms, as ``(member id, NOSPACE|CORRUPT)``."""
        async def op(c: Any) -> list[tuple[int, str]]:
            request = aetcd_rpc.AlarmRequest(action=aetcd_rpc.AlarmRequest.GET, memberID=0,
                                             alarm=aetcd_rpc.AlarmType.Value("NONE"))
            r = await c.unary(lambda s: s.maintenance.Alarm, request)
            return [(int(a.memberID), aetcd_rpc.AlarmType.Name(a.alarm)) for a in r.alarms]

        return await self.store.call(_translated(op), what="list alarms")

    async def compact(self, revision: int) -> bool:
        """Compact etcd's history below ``revision``; False if it was already compacted that far."""
        async def op(c: Any) -> bool:
            try:
                await c.compact(revision)
            except aetcd_exc.ClientError as exc:
                if "required revision has been compacted" in str(exc):
                    return False
                raise
            return True

        return await self.store.call(op, what=f"compact to revision {revision}")


def _translated(op: Any) -> Any:
    """``op`` with raw gRPC errors raised as aetcd's (what :func:`translate` knows)."""
    async def call(c: Any) -> Any:
        try:
            return await op(c)
        except grpc.aio.AioRpcError as exc:
            raise_as_aetcd(exc)
            raise StoreError(str(exc)) from exc

    return call
