"""The etcd side of ``daprdockr apply``: the stored specs with the revisions a plan is guarded by,
and each planned change written as one transaction that holds only if the service's key has not
moved since the plan read it (the spec with its history entry and rollout record, as ``svc set``
writes them: :meth:`~daprdockr.adapters.versions_store.VersionStore.write_version`)."""

from __future__ import annotations

import logging

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.apply_plan import Change, Stored
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.state import decode_entry

log = logging.getLogger(__name__)
CAUSE = "apply"  # the history entry's cause


class ApplyStore:
    def __init__(self, store: EtcdStore) -> None:
        self.store = store
        self.schema = store.schema
        self.versions = VersionStore(store)

    async def stored(self, *, group: str | None = None) -> tuple[dict[ServiceName, Stored], int]:
        """Every stored spec (of ``group`` only, if given) with its key's mod revision, malformed
        ones included (their problem said), and the store revision they were read at."""
        prefix = self.schema.services_prefix + (f"{group}/" if group is not None else "")
        kvs, revision = await self.store.read_prefix(prefix)
        found: dict[ServiceName, Stored] = {}
        for kv in kvs:
            parsed = self.schema.parse(kv.key)
            if parsed is None or parsed.kind != "service" or parsed.service is None:
                log.warning("skipping malformed etcd key %s", kv.key)
                continue
            decoded = decode_entry(self.schema, kv)
            found[parsed.service] = (Stored(revision=kv.mod_revision, spec=decoded)
                                     if isinstance(decoded, ServiceSpec)
                                     else Stored(revision=kv.mod_revision, problem=str(decoded)))
        return found, revision

    async def write(self, change: Change) -> bool:
        """Write ``change`` iff its service's key is still at the plan's revision; False (nothing
        written) if someone else changed or deleted it meanwhile."""
        if change.kind == "unchanged":
            return True
        if change.kind == "delete":
            return await self.versions.delete_service_at(change.name, change.revision)
        desired = change.desired
        assert desired is not None
        written = await self.versions.write_version(
            change.name, lambda _current, _problem: desired, cause=CAUSE,
            guard=(self.schema.service(change.name), change.revision))
        return written is not None
