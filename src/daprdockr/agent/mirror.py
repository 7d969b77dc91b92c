"""A local mirror of the etcd key space, kept current by the watch stream.

The reconciler, DNS and nginx all derive their view from one :class:`StateMirror` instead of
reading etcd on every event: :meth:`reset` loads a full read, :meth:`apply` applies one watch
event, and :meth:`state` decodes (and caches until the next change) a typed
:class:`~daprdockr.core.state.ClusterState`.  A ``resync`` event from the watch means the stream
was interrupted, so the owner re-reads everything and calls :meth:`reset`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from daprdockr.adapters.etcd_store import WatchEvent
from daprdockr.core.keys import KeySchema
from daprdockr.core.state import ClusterState, RawKV, decode_state

log = logging.getLogger(__name__)


class StateMirror:
    def __init__(self, *, schema: KeySchema) -> None:
        self.schema = schema
        self._kvs: dict[str, RawKV] = {}
        self.revision = 0
        self.version = 0  # bumped on every change; consumers compare it
        self._cached: ClusterState | None = None
        self._warned: set[str] = set()

    def reset(self, kvs: Iterable[RawKV], *, revision: int) -> None:
        self._kvs = {kv.key: kv for kv in kvs}
        self.revision = revision
        self._changed()

    def apply(self, ev: WatchEvent) -> bool:
        """Apply one put/delete; returns False for events older than the mirror."""
        if ev.kind == "resync" or (ev.revision and ev.revision <= self.revision and ev.key in self._kvs
                                   and self._kvs[ev.key].mod_revision >= ev.revision):
            return False
        if ev.kind == "delete":
            self._kvs.pop(ev.key, None)
        else:
            self._kvs[ev.key] = RawKV(
                key=ev.key,
                value=ev.value,
                lease=ev.lease,
                create_revision=ev.create_revision,
                mod_revision=ev.revision,
            )
        self.revision = max(self.revision, ev.revision)
        self._changed()
        return True

    def _changed(self) -> None:
        self.version += 1
        self._cached = None

    def state(self) -> ClusterState:
        if self._cached is None:
            self._cached = decode_state(self.schema, self._kvs.values(), revision=self.revision)
            for key, reason in self._cached.skipped:
                if key not in self._warned:
                    self._warned.add(key)
                    log.warning("skipping malformed etcd key %s: %s", key, reason)
        return self._cached
