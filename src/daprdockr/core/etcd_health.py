"""etcd's own health as the agents see it, and its compaction schedule.  Pure: no I/O.

etcd 3.4 keeps every revision of every key until someone compacts, and refuses every write once
its database reaches ``--quota-backend-bytes`` (alarm ``NOSPACE``).  The agents compact as
kube-apiserver does: every ``interval``, the compacting agent (:func:`compactor_of`) compacts to the
revision it saw one interval earlier (:func:`compaction_step`), so a watcher has a whole interval
to catch up before the events it still needs go.  :class:`EtcdHealth` is what ``/healthz``,
``daprdockr status`` and the metrics show: the database size against the quota and the alarms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daprdockr.core.records import NodeRecord
from daprdockr.errors import ValidationError

DEFAULT_QUOTA_BYTES = 2 * 1024 ** 3  # etcd's own default --quota-backend-bytes
DEFAULT_COMPACT_INTERVAL = 300.0  # kube-apiserver's --etcd-compaction-interval
POLL_INTERVAL = 10.0  # how often the agents read etcd's status and alarms
ALARMS = ("NOSPACE", "CORRUPT")  # etcd's AlarmType names (NONE aside); either stops every write
FIX = ("compact etcd (the agents do every --compact-interval; by hand: etcdctl compact REVISION), defragment it "
       "(etcdctl defrag --cluster) and disarm the alarm (etcdctl alarm disarm); see README \"etcd housekeeping\"")


def parse_interval(text: str, *, field: str = "--compact-interval") -> float:
    """Seconds between compactions: ``300``, ``300s``, ``5m``; ``0`` or ``off``: never."""
    value = text.strip().lower()
    if value in ("off", "0", "no", "false"):
        return 0.0
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(value[-1:], 0.0)
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        raise ValidationError(f"{text!r} is not a number of seconds (300, 5m) or off", field=field) from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ValidationError(f"{text!r} must be a finite number of seconds >= 0, or off", field=field)
    return seconds


def parse_bytes(text: str, *, field: str = "--etcd-quota-bytes") -> int:
    """A size in bytes: ``2147483648``, ``2GiB``, ``16MiB`` (etcd's flag takes plain bytes)."""
    value = text.strip()
    units = {"KIB": 1024, "MIB": 1024 ** 2, "GIB": 1024 ** 3, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
    for unit, scale in units.items():
        if value.upper().endswith(unit):
            value, factor = value[: -len(unit)], scale
            break
    else:
        factor = 1
    try:
        size = int(value) * factor
    except ValueError:
        raise ValidationError(f"{text!r} is not a size in bytes (2147483648, 2GiB)", field=field) from None
    if size <= 0:
        raise ValidationError(f"{text!r} must be more than 0 bytes", field=field)
    return size


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # (not reached)


@dataclass(frozen=True, slots=True, kw_only=True)
class EtcdHealth:
    """The last poll of etcd's status and alarms, and this agent's compactions."""

    db_size: int = 0  # bytes the member's database file takes (what the quota is checked against)
    db_size_in_use: int = 0  # of those, bytes in use (the rest is free after compactions; defrag returns it)
    quota: int = DEFAULT_QUOTA_BYTES
    alarms: tuple[str, ...] = ()  # active alarm names (NOSPACE, CORRUPT), each once
    revision: int = 0  # the store revision at the poll
    polled: bool = False  # a poll succeeded at least once
    error: str = ""  # why the last poll failed ("" if it worked)
    interval: float = DEFAULT_COMPACT_INTERVAL  # seconds between compactions (0: this agent never compacts)
    compactor: str = ""  # the node that compacts (compactor_of), as last seen ("" unknown or none)
    compactions: int = 0  # compactions this agent made
    compacted_revision: int = 0  # the revision this agent last compacted to
    compact_error: str = ""  # why the last compaction failed ("" if it worked)

    @property
    def problem(self) -> str:
        """Why etcd cannot take writes ("" when it can, as far as the last poll tells)."""
        if "CORRUPT" in self.alarms:
            return ("etcd raised the CORRUPT alarm: a member's data differs from the others' and etcd refuses "
                    "writes; restore the member from a healthy one (etcdctl snapshot), then etcdctl alarm disarm")
        if "NOSPACE" in self.alarms:
            return (f"etcd raised the NOSPACE alarm: its database ({human_bytes(self.db_size)}) reached the quota "
                    f"({human_bytes(self.quota)}) and every write fails (mvcc: database space exceeded); running "
                    f"services keep serving, but nothing can be claimed, moved or changed until you {FIX}")
        return ""

    @property
    def used(self) -> float:
        """The database size as a fraction of the quota."""
        return self.db_size / self.quota if self.quota else 0.0

    def summary(self) -> str:
        if self.problem:
            return self.problem
        if not self.polled:
            return f"etcd status not read yet{': ' + self.error if self.error else ''}"
        text = (f"database {human_bytes(self.db_size)} ({human_bytes(self.db_size_in_use)} in use) of a "
                f"{human_bytes(self.quota)} quota ({self.used:.0%})")
        return text + (f"; last status read failed: {self.error}" if self.error else "")

    def to_dict(self) -> dict[str, Any]:
        return {"ok": not self.problem, "detail": self.summary(), "db_size": self.db_size,
                "db_size_in_use": self.db_size_in_use, "quota": self.quota, "alarms": list(self.alarms),
                "revision": self.revision, "error": self.error,
                "compaction": {"interval": self.interval, "compactor": self.compactor,
                               "compactions": self.compactions, "compacted_revision": self.compacted_revision,
                               "error": self.compact_error}}


def alarm_names(raw: list[tuple[int, str]]) -> tuple[str, ...]:
    """The distinct alarm names of etcd's ``(member id, name)`` list, NONE left out, sorted."""
    return tuple(sorted({name for _member, name in raw if name != "NONE"}))


@dataclass(frozen=True, slots=True)
class Mark:
    """A store revision seen at a time (monotonic seconds)."""

    revision: int
    at: float


def compaction_step(mark: Mark | None, *, revision: int, now: float, interval: float) -> tuple[int, Mark | None]:
    """One tick of the compacting agent: ``(revision to compact to or 0, the mark to keep)``.

    The first tick only records where the store is; a tick at least ``interval`` after the mark
    compacts to the mark's revision and records the current one (the window etcd keeps is always
    at least one interval of history).  A store that did not move past the mark compacts nothing.
    """
    if mark is None or revision < mark.revision:  # (a store restored from a snapshot: start again)
        return 0, Mark(revision=revision, at=now)
    if now - mark.at < interval:
        return 0, mark
    target = mark.revision if revision > mark.revision else 0
    return target, Mark(revision=revision, at=now)


def compactor_of(nodes: Mapping[str, NodeRecord]) -> str:
    """The live node that compacts etcd's history: of the nodes that compact (not started with
    ``--compact-interval 0``), the one that joined first (the lowest create revision of its node
    record; the node id breaks a tie), "" with none.  Every agent computes
    the same from the same node records, so no lock key is needed (a key under the prefix would be
    an unknown, malformed key to agents from before compaction); a node that joins later never
    takes the job from one that is still there."""
    willing = [r for r in nodes.values() if r.compacts]
    if not willing:
        return ""
    return min(willing, key=lambda r: (r.create_revision, r.node_id)).node_id
