"""DNS counters of one server process, addable across the agent and its DNS workers.  Pure."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class DnsStats:
    queries: int = 0
    cache_hits: int = 0
    forwarded: int = 0
    dropped: int = 0
    limited: int = 0  # responses to clients outside ``allow`` dropped or truncated by rate limiting
    answers: dict[str, int] = field(default_factory=dict)

    def count(self, rcode: str, n: int = 1) -> None:
        self.answers[rcode] = self.answers.get(rcode, 0) + n

    def add(self, other: DnsStats) -> None:
        """Add ``other``'s counters to these (totals over the agent and its DNS workers)."""
        self.queries += other.queries
        self.cache_hits += other.cache_hits
        self.forwarded += other.forwarded
        self.dropped += other.dropped
        self.limited += other.limited
        for rcode, n in other.answers.items():
            self.count(rcode, n)
