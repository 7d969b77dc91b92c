"""The agent's one change channel: its parts publish what changed, the loops that act subscribe.

A topic is a kind of change (:class:`Topic`); publishing one sets the event of every subscriber
to it and counts it.  Level-triggered: a subscriber re-reads what it needs when woken and never
depends on seeing every change (a burst wakes it once).
"""

from __future__ import annotations

import asyncio
import enum


class Topic(enum.Enum):
    ETCD = "etcd"  # the mirror of etcd changed (the informer)
    HEALTH = "health"  # a container's health status changed (the health checks)
    LOCAL = "local"  # this node's containers changed as Docker shows them (the reconciler's listing)


class Changes:
    def __init__(self) -> None:
        self._subscribers: dict[Topic, list[asyncio.Event]] = {t: [] for t in Topic}
        self._counts: dict[Topic, int] = dict.fromkeys(Topic, 0)

    def subscribe(self, wake: asyncio.Event, *topics: Topic) -> None:
        """Set ``wake`` whenever one of ``topics`` is published."""
        for topic in topics:
            self._subscribers[topic].append(wake)

    def publish(self, topic: Topic) -> None:
        self._counts[topic] += 1
        for wake in self._subscribers[topic]:
            wake.set()

    def count(self, topic: Topic) -> int:
        """How many times ``topic`` was published (a version of what it stands for)."""
        return self._counts[topic]

    def etcd_changed(self) -> None:
        self.publish(Topic.ETCD)

    def health_changed(self) -> None:
        self.publish(Topic.HEALTH)

    def local_changed(self) -> None:
        self.publish(Topic.LOCAL)
