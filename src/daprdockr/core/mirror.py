"""A local mirror of the etcd key space, kept current by the watch stream.  Pure: no I/O.

The reconciler, DNS and nginx all derive their view from one :class:`StateMirror` instead of
reading etcd on every event: :meth:`reset` loads a full read, :meth:`apply` applies one watch
event, and :meth:`state` returns a typed :class:`~daprdockr.core.state.ClusterState`.  Each event
decodes its key's new value once and updates the state's tables in place of that key's old
part (:mod:`~daprdockr.core.state_tables`, copy on write), so an event costs in proportion to
what it changed, never a rebuild of the whole state; a full build happens only in
:meth:`reset`.  A ``resync`` event from the watch means the stream
was interrupted, so the owner re-reads everything and calls :meth:`reset`.

The agent also applies the events of its *own* successful writes as soon as etcd confirms them
(read-your-writes), before the watch delivers the same events.  So events can arrive twice and
out of order with the local ones; each key remembers the revision of its last put or delete
(deletes as tombstones), and an event not newer than that is dropped.  Events at or below the
revision of the last full read are dropped too: that read already shows their effect, and a late
put of a key deleted before the read must not bring it back.

:attr:`StateMirror.removal_revision` is the newest revision at which a routable instance stopped
being routable (an owner waits until every agent served a state at or past it before it stops
the container), tracked per event, so a removal is seen even when the instance came and went
between two reads of the state.

Bad data never stops a service: the mirror remembers the last valid spec of every service key,
and when a spec key turns malformed it keeps planning with that one (see
:func:`~daprdockr.core.state.assemble_state`).  :meth:`StateMirror.new_problems` hands each
malformed value to the caller once, to log.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from daprdockr.core.bulk import gc_paused
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.records import InstanceRecord
from daprdockr.core.state import ClusterState, Decoded, RawKV, decode_entry
from daprdockr.core.state_tables import StateTables


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """``put``/``delete`` of one key, or ``resync``: the stream was interrupted, re-read all."""

    kind: Literal["put", "delete", "resync"]
    key: str = ""
    value: bytes = b""
    revision: int = 0
    lease: int = 0
    create_revision: int = 0

    def as_kv(self) -> RawKV:
        """The key/value a ``put`` leaves in etcd."""
        return RawKV(key=self.key, value=self.value, lease=self.lease, create_revision=self.create_revision,
                     mod_revision=self.revision)


class StateMirror:
    def __init__(self, *, schema: KeySchema) -> None:
        self.schema = schema
        self._kvs: dict[str, RawKV] = {}
        self._decoded: dict[str, Decoded | str] = {}  # per-key decode cache (str = skip reason)
        self.revision = 0
        self._reset_revision = 0  # revision of the last full read (reset)
        self._tables = StateTables(schema=schema)
        self._pending: list[str] = []  # keys that turned malformed since the last new_problems()
        # bumped when a service or instance key changes (not a node record): what DNS and nginx
        # serve depends only on those, so consumers skip a push when it did not move
        self.routing_version = 0
        # the newest revision at which a routable instance stopped being routable (its key was
        # deleted, or rewritten as not running or not healthy): agents confirm such removals
        self.removal_revision = 0
        self._reported: set[str] = set()  # malformed keys already handed out by new_problems()
        self._deleted_at: dict[str, int] = {}  # tombstones: key -> revision of its delete
        self._last_good: dict[str, ServiceSpec] = {}  # service key -> last valid spec seen

    def reset(self, kvs: Iterable[RawKV], *, revision: int) -> None:
        self._kvs = {kv.key: kv for kv in kvs}
        self._last_good = {k: v for k, v in self._last_good.items() if k in self._kvs}
        self._decoded.clear()
        self._deleted_at.clear()
        self._tables = StateTables(schema=self.schema)
        with gc_paused():
            for kv in self._kvs.values():  # (a spec decoded valid is remembered before its key is placed)
                self._tables.replace_key(kv, None, self._decode(kv), last_good=self._last_good, refresh=False)
            self._tables.refresh_all()
        self._pending = [k for k in self._tables.skipped if k not in self._reported]
        self.revision = revision
        self._reset_revision = revision
        self.routing_version += 1
        self.removal_revision = revision  # (a re-read may have dropped anything)

    def _seen(self, ev: WatchEvent) -> int:
        """The revision of the last change this mirror knows for ``ev.key`` (0 if none)."""
        kv = self._kvs.get(ev.key)
        return kv.mod_revision if kv is not None else self._deleted_at.get(ev.key, 0)

    def apply(self, ev: WatchEvent) -> bool:
        """Apply one put/delete; returns False for an event not newer than what the key shows."""
        if ev.kind == "resync" or (
            ev.revision and (ev.revision <= self._reset_revision or ev.revision <= self._seen(ev))
        ):
            return False
        self._reported.discard(ev.key)  # a new value: report it again if it is malformed too
        old_kv = self._kvs.get(ev.key)
        old = self._decode(old_kv) if old_kv is not None else None
        new: Decoded | str | None = None
        if ev.kind == "delete":
            self._kvs.pop(ev.key, None)
            self._decoded.pop(ev.key, None)
            self._last_good.pop(ev.key, None)
            self._deleted_at[ev.key] = ev.revision
            if len(self._deleted_at) > 10_000:  # bounded: forget the oldest half
                for key in sorted(self._deleted_at, key=self._deleted_at.__getitem__)[:5_000]:
                    del self._deleted_at[key]
            kv = old_kv
        else:
            self._deleted_at.pop(ev.key, None)
            self._decoded.pop(ev.key, None)
            kv = self._kvs[ev.key] = ev.as_kv()
            new = self._decode(kv)
            if isinstance(new, str):
                self._pending.append(ev.key)
        if ev.key.startswith(self.schema.instances_prefix) and _removes(old, new):
            self.removal_revision = max(self.removal_revision, ev.revision)
        if kv is not None:
            self._tables.replace_key(kv, old, new, last_good=self._last_good)
        self.revision = max(self.revision, ev.revision)
        if ev.key.startswith((self.schema.services_prefix, self.schema.instances_prefix)):
            self.routing_version += 1
        return True

    def _decode(self, kv: RawKV) -> Decoded | str:
        value = self._decoded.get(kv.key)
        if value is None:
            value = self._decoded[kv.key] = decode_entry(self.schema, kv)
            if isinstance(value, ServiceSpec):
                self._last_good[kv.key] = value
        return value

    def state(self) -> ClusterState:
        """The state now (kept per event, see :mod:`~daprdockr.core.state_tables`; a state handed out
        never changes)."""
        return self._tables.snapshot(revision=self.revision)

    def new_problems(self) -> list[tuple[str, str]]:
        """Malformed keys (with the reason) not handed out before: each bad value once."""
        fresh: list[tuple[str, str]] = []
        for key in self._pending:
            why = self._tables.skipped.get(key)
            if why is not None and key not in self._reported:
                fresh.append((key, why))
                self._reported.add(key)
        self._pending = []
        return fresh


def _removes(old: Decoded | str | None, new: Decoded | str | None) -> bool:
    """Whether replacing ``old`` by ``new`` (None: deleted) takes a routed peer out: a routable
    instance deleted, made not routable, or moved to another address or port (a replacement, a
    takeover).  Both values are the ones the event decodes anyway: no decode of its own."""
    if not isinstance(old, InstanceRecord) or not old.routable:
        return False
    return not (isinstance(new, InstanceRecord) and new.routable
                and (new.address, new.ports) == (old.address, old.ports))
