"""Confirmed removal on one node: which removal its routers all serve, and what to publish.  Pure.

The fanout reports every state it hands to DNS and nginx (:meth:`RemovalTracker.served`): a
state that took an instance out of the routes (or one whose etcd view says an instance left,
even if it never reached this node's routes) is a *removal* at that state's revision.  The
agent's own DNS responders serve a state the moment they are handed it; the routers that apply
it later (nginx, the DNS worker processes) report the revision they serve
(:meth:`RemovalTracker.acknowledge`).  :attr:`RemovalTracker.applied` is the newest removal all
of them serve; :meth:`RemovalTracker.due` says what to write to ``applied/<node>`` (nothing
until it passed what was written last on this lease).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class Acknowledgements(Protocol):
    """Where a router reports the etcd revision of the newest state it serves."""

    def acknowledge(self, router: str, revision: int | None) -> None:
        """``router`` serves ``revision``; None: it has nothing that serves (it counts no more)."""


@dataclass(slots=True)
class RemovalTracker:
    removal_at: int = 0  # newest revision of a served state that dropped an instance
    removal_seen: int = 0  # the mirror's removal revision when a state was last served
    published: int = 0  # newest revision written to ``applied/<node>`` on the current lease
    acks: dict[str, int] = field(default_factory=dict)  # router -> revision it serves

    def served(self, *, revision: int, routed_removed: bool, mirror_removal: int) -> bool:
        """A state at ``revision`` was handed to the routers; True if it is a removal (the
        owner waits for us to say we serve a state without it)."""
        if routed_removed or mirror_removal > self.removal_seen:
            self.removal_seen = mirror_removal
            self.removal_at = revision
            return True
        return False

    def acknowledge(self, router: str, revision: int | None) -> bool:
        """``router`` serves ``revision`` (None: it counts no more); True if a write may be due."""
        if revision is None:
            self.acks.pop(router, None)
        else:
            self.acks[router] = revision
        return self.due() > 0 or (revision is not None and revision >= self.removal_at > self.published)

    @property
    def applied(self) -> int:
        """The newest removal every router serves."""
        return min(self.removal_at, *self.acks.values()) if self.acks else self.removal_at

    @property
    def waiting(self) -> bool:
        """A removal is served by the fanout that some router has not acknowledged yet."""
        return self.applied < self.removal_at

    def due(self) -> int:
        """The revision to publish now (0: nothing new)."""
        applied = self.applied
        return applied if applied > self.published else 0

    def wrote(self, revision: int) -> None:
        self.published = max(self.published, revision)

    def new_lease(self) -> None:
        """``applied/<node>`` went with the old lease: what is applied is due again."""
        self.published = 0
