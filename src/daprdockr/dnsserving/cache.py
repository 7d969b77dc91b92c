"""The DNS server's answer cache entries: pre-encoded answers served in turn, ended by their owner.

Every cached answer has an owner: the service its name belongs to, the group (for
``<group>.<domain>``), or None, *volatile* (the apex, and negative answers, which carry the SOA
and its serial).  Each owner has one live :class:`Token`; a change of the owner marks it dead
(O(1)), and an entry holding a dead token is a miss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from daprdockr.core.names import ServiceName

MAX_CACHE = 50_000
MAX_ROTATIONS = 8

Owner = tuple[str, str] | ServiceName | None  # ("group", name), a service, None: volatile


class Token:
    """An owner's mark on its cached answers: dead once the owner changed (then they are misses)."""

    __slots__ = ("live",)

    def __init__(self) -> None:
        self.live = True


@dataclass(slots=True)
class Cached:
    """Pre-encoded answers (without the 2-byte id) for one question; served round robin.

    A rotation is encoded the first time it is served (``build``; None once all are), so that
    one query costs one encoding, however many rotations its answer has.
    """

    variants: list[bytes | None]
    next: int
    rcode: str
    token: Token
    build: Callable[[int], bytes] | None = None
    hits: int = 0

    def variant(self, i: int) -> bytes:
        wire = self.variants[i]
        if wire is None:
            assert self.build is not None
            wire = self.variants[i] = self.build(i)
            if None not in self.variants:
                self.build = None  # (frees the records it held)
        return wire


def owner_of(qname: tuple[bytes, ...], *, domain_labels: int) -> Owner:
    """Whose change ends a positive answer for ``qname`` (labels, the domain's ``domain_labels``
    included): its service (``[<n>.|_<port>._<proto>.|<port>.<proto>.<n>.]<service>.<group>``),
    its group, or None (the apex)."""
    labels = [label.decode(errors="replace").lower() for label in qname[:len(qname) - domain_labels]]
    if not labels:
        return None
    if len(labels) == 1:
        return ("group", labels[0])
    return ServiceName(group=labels[-1], service=labels[-2])
