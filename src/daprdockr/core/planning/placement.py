"""The spread rule: how many instances of a service a node should hold, and which node an unowned
instance number goes to.  Pure (documented in README "Placement").

With ``L`` live nodes and a service wanting ``N`` instances, a node claims only while it holds
fewer than ``ceil(N / L)`` instances of that service (its *fair share*).  Instance numbers are
dealt round-robin: number ``n`` is *preferred* by the node at index ``(n - 1) % L`` in the sorted
list of live nodes; unowned numbers are dealt (:func:`deal_unowned`) to their preferred node if it
is below its fair share, else to the next node in the ring that is.  Because ``L * ceil(N / L) >=
N`` every instance normally finds a node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def fair_share(instances: int, live_nodes: int) -> int:
    """``ceil(instances / live_nodes)``, the most instances of one service a node should claim."""
    return math.ceil(instances / max(1, live_nodes))


def preferred_node(number: int, live: Sequence[str]) -> str:
    """The node that claims instance ``number`` first: round-robin over the sorted live nodes."""
    return live[(number - 1) % len(live)]


def deal_unowned(numbers: Sequence[int], *, live: Sequence[str], room: Mapping[str, int]) -> dict[int, str]:
    """Deal unowned instance ``numbers`` to nodes below their fair share.

    Number ``n`` goes to its preferred node (``preferred_node``) when that node has room, else
    to the next node in the sorted ring that has room; ``room`` is each node's fair share minus
    what it holds.  Every agent computes the same table from the same etcd state, so after a
    failover the lost numbers go straight to the nodes with room instead of waiting for the
    claim grace.  Numbers left over (no room anywhere) are absent from the result.
    """
    left = {node: max(0, room.get(node, 0)) for node in live}
    dealt: dict[int, str] = {}
    for n in sorted(numbers):
        start = live.index(preferred_node(n, live))
        for i in range(len(live)):
            node = live[(start + i) % len(live)]
            if left[node] > 0:
                dealt[n] = node
                left[node] -= 1
                break
    return dealt
