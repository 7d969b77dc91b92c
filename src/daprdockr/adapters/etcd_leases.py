"""etcd leases: grant, keep alive, revoke (the keeper that refreshes the agent's lease is
:mod:`daprdockr.adapters.lease_keeper`)."""

from __future__ import annotations

import aetcd.rpc as aetcd_rpc

from daprdockr.adapters.etcd_client import EtcdClient
from daprdockr.adapters.etcd_pool import EtcdPool
from daprdockr.errors import LeaseLostError


class EtcdLeases(EtcdPool):
    """Lease calls, with the pool's failover."""

    async def grant_lease(self, ttl: int) -> int:
        lease = await self._call(lambda c: c.lease(ttl), what="grant lease")
        return int(lease.id)

    async def keepalive(self, lease_id: int, *, attempt_timeout: float | None = None) -> int:
        """Refresh the lease; returns the remaining TTL, raises LeaseLostError if it is gone.

        ``attempt_timeout`` bounds each endpoint's attempt (a hung member must not eat the lease's TTL).
        """
        reply = await self._call(
            lambda c: c.refresh_lease(lease_id), what="keepalive", attempt_timeout=attempt_timeout)
        ttl = int(getattr(reply, "TTL", 0))
        if ttl <= 0:
            raise LeaseLostError(f"lease {lease_id:x} expired")
        return ttl

    async def revoke_lease(self, lease_id: int) -> int:
        """Revoke the lease (every key on it is deleted); returns the revision of that deletion."""

        async def op(c: EtcdClient) -> int:  # (aetcd's revoke_lease drops the revision)
            resp = await c.unary(lambda s: s.lease.LeaseRevoke, aetcd_rpc.LeaseRevokeRequest(ID=lease_id))
            return int(resp.header.revision)

        return await self._call(op, what="revoke lease")
