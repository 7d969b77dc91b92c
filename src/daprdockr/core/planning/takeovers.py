"""The plan for moving instances here: taking over a draining node's instances, and rebalancing
(:mod:`daprdockr.core.planning.rebalance`).  Pure.

Drain.  A node with a drain marker claims and adopts nothing, releases instances it does not run,
and keeps running the rest until another node has taken them over: the nodes that are not
draining deal the draining node's running instances among themselves by the claim rule
(:func:`~daprdockr.core.planning.placement.deal_unowned`), and the node dealt one starts it
(:class:`~daprdockr.core.planning.actions.TakeOver`), within the service's replacement slots.
Draining nodes do not count as capacity.  A node that joins later takes no healthy instances away
from others unless rebalancing is on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.planning.actions import Action, TakeOver
from daprdockr.core.planning.observed import Observed, Wake, is_busy, live_nodes
from daprdockr.core.planning.placement import deal_unowned, fair_share
from daprdockr.core.planning.rebalance import EvenCache, rebalance_move
from daprdockr.core.records import InstanceRecord


def plan_handoffs(
    desired: Mapping[ServiceName, ServiceSpec], obs: Observed, out: list[Action], wake: Wake
) -> None:
    """Take over instances of draining nodes: each goes to the node the deal gives it (the same
    rule as unowned numbers, among the nodes that are not draining), at most ``update.parallel``
    moves of one service at a time (the replacement slots)."""
    if not obs.claiming or obs.drain_me or not obs.draining:
        return
    live = live_nodes(obs)
    index = obs.index
    desired_here = [r for r in index.of_node(obs.node_id).values()
                    if (spec := desired.get(r.service)) is not None and r.number <= spec.instances]
    held_total = len(desired_here)
    moving: dict[ServiceName, list[InstanceRecord]] = {}
    for node in obs.draining:
        for r in index.of_node(node).values():
            spec = desired.get(r.service)
            if spec is not None and r.number <= spec.instances and r.state == "running":
                moving.setdefault(r.service, []).append(r)
    holders: dict[ServiceName, Counter[str]] = {
        name: Counter(r.node for r in index.of_service(name).values()
                      if r.number <= desired[name].instances and r.node not in obs.draining)
        for name in moving}
    for name in sorted(moving, key=str):
        spec = desired[name]
        free = spec.update.parallel - len(obs.slots.get(name, {}))
        share = fair_share(spec.instances, len(live))
        counts = holders.get(name, Counter())
        by_number = {r.number: r for r in moving[name]}
        dealt = deal_unowned(sorted(by_number), live=live, room={n: share - counts[n] for n in live})
        for number, node in sorted(dealt.items()):
            if free <= 0 or (obs.capacity and held_total >= obs.capacity):
                break
            if node != obs.node_id or is_busy((name, number), obs, wake):
                continue
            out.append(TakeOver(record=by_number[number], spec=spec))
            free -= 1
            held_total += 1


def plan_rebalance(
    desired: Mapping[ServiceName, ServiceSpec], obs: Observed, out: list[Action], wake: Wake
) -> None:
    """Take over one instance of a settled service from the node with the most of it, when this
    node has the fewest (:mod:`daprdockr.core.planning.rebalance`)."""
    if not obs.rebalance or not obs.claiming or obs.drain_me or out:
        return  # (anything else to do comes first: a move waits for a quiet pass)
    live = live_nodes(obs)
    if len(live) < 2:
        return
    index = obs.index
    held_total = {node: len(held) for node, held in index.by_node.items()}
    capacity = {n: rec.capacity for n, rec in obs.nodes.items()}
    capacity[obs.node_id] = obs.capacity
    even = obs.even or EvenCache()
    names = desired if obs.scope is None else {n for n in (*obs.scope, *even.uneven) if n in desired}
    for name in sorted(names, key=str):
        if name in obs.frozen or name in obs.invalid:
            continue  # (bad data in etcd is never a reason to move anything)
        spec = desired[name]
        records = index.of_service(name)
        if even.even(spec, records, nodes=live):
            continue  # (no move evens out a service whose nodes differ by one at most)
        move = rebalance_move(spec, records.values(), nodes=live, held_total=held_total, capacity=capacity,
                              slots_taken=len(obs.slots.get(name, {})), wall_now=obs.wall)
        if move is not None and move.to == obs.node_id and not is_busy(move.record.key_tuple, obs, wake):
            out.append(TakeOver(record=move.record, spec=spec, rebalancing=True))
            return  # one move at a time per node
