"""What every part of the reconciler shares: this node, its lease, the ports, the retry table.

One mutable object, not copies: the agent replaces the lease, and tests swap the health source,
the confirmation or the retry policy on the :class:`~daprdockr.reconcile.Reconciler`, which
writes them here, so every part sees the change at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from daprdockr.adapters.docker_runtime import ContainerRuntime
from daprdockr.core.mirror import StateMirror, WatchEvent
from daprdockr.core.planning.actions import Key
from daprdockr.core.retry import KeyRetries, RetryPolicy
from daprdockr.reconciling.ports import HealthSource, InstanceStore, RolloutCoordinator


@dataclass(kw_only=True, slots=True, eq=False)
class ReconcileContext:
    node_id: str
    address: str
    store: InstanceStore
    runtime: ContainerRuntime
    mirror: StateMirror
    health: HealthSource
    rollouts: RolloutCoordinator
    policy: RetryPolicy
    clock: Callable[[], float]
    rand: Callable[[], float]
    on_written: Callable[[WatchEvent], object]  # read-your-writes: each confirmed write's event, to the mirror
    confirm_removal: Callable[[int], Awaitable[None]]  # waits until every agent applied a revision
    stop_timeout: float
    drain_timeout: float
    lease: int = 0
    retries: KeyRetries[Key] = field(default_factory=KeyRetries)
