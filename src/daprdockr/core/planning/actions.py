"""What the planner asks for: one action per instance key (:data:`Action`), and :func:`action_key`,
the key an action is about.

Each action carries what it was planned from, so the executor acts on that and reads no state of
its own: the spec (``None`` when the service is no longer desired, or frozen), the record with its
revisions (the create revision its writes compare, the mod revision a takeover compares), the bad
key with its revisions, the container, and the revision a stopped container was routed until.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from daprdockr.core.containers import ContainerInfo
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.records import InstanceRecord
from daprdockr.core.state import BadKey

Key = tuple[ServiceName, int]


@dataclass(frozen=True, slots=True)
class Claim:
    """Race for an unowned instance; on a win, start its container."""

    key: Key
    spec: ServiceSpec


@dataclass(frozen=True, slots=True)
class Start:
    """(Re)start the container of an instance we own, replacing ``old`` if given."""

    record: InstanceRecord
    spec: ServiceSpec
    old: ContainerInfo | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Roll:
    """Replace our running container ``old`` of an instance with one of the new ``spec``, under
    the service's update policy (a replacement slot, start-first or stop-first, healthy for
    ``min_healthy`` within ``deadline``; on failure the rollout is rolled back or paused)."""

    record: InstanceRecord
    spec: ServiceSpec
    old: ContainerInfo


@dataclass(frozen=True, slots=True)
class TakeOver:
    """``record`` is held by a draining node (or by the node with the most of its service, when
    rebalancing): start the instance here (in a replacement slot) and, once healthy, move the key
    onto our lease; the other node then takes its container out."""

    record: InstanceRecord
    spec: ServiceSpec
    rebalancing: bool = False  # (else the holder is draining)


@dataclass(frozen=True, slots=True)
class Adopt:
    """A healthy container of ours whose key is unowned (``record`` None) or on an old lease."""

    container: ContainerInfo
    spec: ServiceSpec | None  # None: the service is frozen (kept as it is, whatever its spec)
    record: InstanceRecord | None = None


@dataclass(frozen=True, slots=True)
class Refresh:
    """Our container is fine but the etcd record is stale: rewrite it from the container."""

    record: InstanceRecord
    container: ContainerInfo
    spec: ServiceSpec  # the record's health is the container's under this spec's check


@dataclass(frozen=True, slots=True)
class Release:
    """Stop our container (if any) and delete our key: scaled down or service deleted."""

    record: InstanceRecord
    container: ContainerInfo | None = None
    reason: str = ""
    spec: ServiceSpec | None = field(kw_only=True)  # its stop signal and grace (None: no longer desired)


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop and remove a container of ours that we do not own (anymore)."""

    container: ContainerInfo
    reason: str = ""
    removed_at: int = 0  # it was routed until this etcd revision: confirm its removal first
    spec: ServiceSpec | None = field(kw_only=True)  # its stop signal and grace (None: no longer desired)


@dataclass(frozen=True, slots=True)
class Repair:
    """Our lease holds a malformed value for this key: rewrite it from our running container."""

    key: Key
    bad: BadKey
    container: ContainerInfo
    spec: ServiceSpec | None = field(kw_only=True)  # the rewritten record's health check (None: not desired)


@dataclass(frozen=True, slots=True)
class Purge:
    """Delete an unusable instance key (malformed, or on no lease) if it is still unchanged."""

    key: Key
    bad: BadKey


Action = Claim | Start | Roll | TakeOver | Adopt | Refresh | Release | Stop | Repair | Purge


def action_key(action: Action) -> Key:
    """The instance an action is about (the reconciler runs one action per key at a time)."""
    if isinstance(action, Claim | Repair | Purge):
        return action.key
    if isinstance(action, Start | Roll | TakeOver | Refresh | Release):
        return action.record.key_tuple
    return action.container.key
