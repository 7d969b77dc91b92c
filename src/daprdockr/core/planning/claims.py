"""The plan for instance keys with no container here: our records to restart or release, and
unowned numbers to claim.  Pure.

Ownership.  Instance ``(service, n)`` belongs to whichever node holds its etcd key.  A node claims
an unowned number by the spread rule (:mod:`daprdockr.core.planning.placement`): the node dealt a
number claims it at once (so after a failover the lost numbers go straight to the nodes with
room); any other node below its fair share may claim it once it has stayed unowned for
``claim_grace`` seconds (the preferred node is slow, failing, or at capacity), and one that stays
unowned for ``3 * claim_grace`` (other nodes at capacity) may be claimed by any node beyond its
fair share, so capacity limits never leave an instance unplaced; never beyond a node's
``capacity``.  Scaling down releases the highest numbers first (numbers above ``instances``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from daprdockr.core.instance_index import InstanceIndex, changed_keys
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName, by_instance
from daprdockr.core.planning.actions import Action, Adopt, Claim, Key, Release, Start, action_key
from daprdockr.core.planning.bad_data import fix_bad_key
from daprdockr.core.planning.observed import Observed, Wake, is_busy, is_ours, live_nodes
from daprdockr.core.planning.placement import deal_unowned, fair_share
from daprdockr.core.records import InstanceRecord
from daprdockr.core.state import BadKey, unowned_by_service

# An instance nobody took for this many claim graces may be claimed beyond the fair share.
OVERFLOW_GRACE_FACTOR = 3.0


def plan_records(
    desired: Mapping[ServiceName, ServiceSpec], obs: Observed, covered: set[Key], out: list[Action], wake: Wake
) -> None:
    """Actions for keys with our node id (or on our lease) but no container here."""
    index = obs.index
    if obs.scope is None:
        ours = {**index.of_node(obs.node_id), **index.of_lease(obs.lease)}
    else:  # (the scope's services only: a look at their records, not at all of ours)
        ours = {(name, n): r for name in obs.scope for n, r in index.of_service(name).items() if is_ours(r, obs)}
    for key, rec in sorted(ours.items(), key=by_instance):
        if not is_ours(rec, obs) or key in covered or rec.service in obs.frozen or is_busy(key, obs, wake):
            continue
        spec = desired.get(rec.service)
        if spec is None or rec.number > spec.instances:
            out.append(Release(record=rec, reason="not desired", spec=spec))
        elif obs.drain_me:  # nothing runs it here: let another node claim it
            out.append(Release(record=rec, reason="draining", spec=spec))
        elif wake.after(obs.retry_at.get(key, 0.0), service=rec.service):
            out.append(Start(record=rec, spec=spec, reason="no container"))


def plan_claims(
    desired: Mapping[ServiceName, ServiceSpec], obs: Observed, covered: set[Key], out: list[Action], wake: Wake
) -> None:
    """Claims for unowned instance numbers, within fair share and capacity; purges of unusable keys."""
    for key, bad in sorted(obs.bad_instances.items(), key=by_instance):
        if key in covered or key[0] in obs.frozen or is_busy(key, obs, wake):
            continue  # (keys with containers here were decided with them)
        fix = fix_bad_key(key, bad, (), obs, spec=desired.get(key[0]))
        if fix is not None:
            out.append(fix)
    budget = obs.claim_budget
    if not obs.claiming or obs.drain_me or budget == 0:
        return
    live = live_nodes(obs)
    index = obs.index
    adopting = {action_key(a) for a in out if isinstance(a, Adopt)}
    held_total = index.held_by(obs.node_id) + len(adopting)
    unowned = obs.unowned if obs.unowned is not None else unowned_by_service(desired, index, obs.bad_instances)
    # Two rounds over the services: first the numbers the deal gives this node, then (after the
    # claim grace) the ones dealt to others that are still unowned.  With a budget, a node claims
    # its own share everywhere before it competes for anyone else's: while a large service
    # converges the nodes do not race each other for the same numbers.
    held_now: dict[ServiceName, int] = {}
    deals: list[tuple[ServiceName, ServiceSpec, int, list[int], dict[int, str]]] = []
    # (the services with a key busy, held or being adopted: the others' numbers are all claimable)
    watched = {key[0] for keys in (obs.busy, obs.held_until, adopting) for key in keys}
    for name in sorted((n for n in unowned if n in desired), key=str):  # (a service with none has nothing to claim)
        spec = desired[name]
        holders = _holders(index.of_service(name), instances=spec.instances, keep=2 * len(desired) + 64)
        holders[obs.node_id] += sum(1 for (svc, _) in adopting if svc == name)
        held_now[name] = holders[obs.node_id]
        share = fair_share(spec.instances, len(live))
        numbers = ([n for n in unowned[name] if (name, n) not in adopting and not is_busy((name, n), obs, wake)]
                   if name in watched else list(unowned[name]))
        dealt = deal_unowned(numbers, live=live, room={node: share - holders[node] for node in live})
        deals.append((name, spec, share, numbers, dealt))
        if budget is not None and sum(1 for n in numbers if dealt.get(n) == obs.node_id) >= budget:
            break  # (this node's own numbers so far fill the budget: no need to deal the rest)
    for own in (True, False):
        for name, spec, share, numbers, dealt in deals:
            for n in numbers:
                if (dealt.get(n) == obs.node_id) != own:
                    continue
                key = (name, n)
                if obs.capacity and held_total >= obs.capacity:
                    return
                since = obs.unowned_since.get(key, obs.now)
                if held_now[name] >= share and not wake.after(since + OVERFLOW_GRACE_FACTOR * obs.claim_grace,
                                                              service=name):
                    continue
                if own or wake.after(since + obs.claim_grace, service=name):
                    out.append(Claim(key=key, spec=spec))
                    held_now[name] += 1
                    held_total += 1
                    if budget is not None:
                        budget -= 1
                        if budget <= 0:
                            return


_HOLDERS: dict[int, tuple[Mapping[int, InstanceRecord], int, Counter[str]]] = {}


def _holders(records: Mapping[int, InstanceRecord], *, instances: int, keep: int) -> Counter[str]:
    """How many of the numbers 1..``instances`` each node holds in one service's ``records``.
    Remembered per records mapping (an index snapshot never changes one, and shares an unchanged
    service's), so a pass counts again only the services whose records changed; the ``keep``
    newest are kept (the oldest go first: a changed service's old mapping is not looked up again)."""
    hit = _HOLDERS.get(id(records))
    if hit is not None and hit[0] is records and hit[1] == instances:
        return Counter(hit[2])
    counts = Counter(r.node for r in records.values() if r.number <= instances)
    while len(_HOLDERS) >= keep:
        del _HOLDERS[next(iter(_HOLDERS))]
    _HOLDERS[id(records)] = (records, instances, counts)
    return Counter(counts)


def track_unowned_since(
    since: dict[Key, float], *, seen: Mapping[ServiceName, tuple[int, ...]],
    unowned: Mapping[ServiceName, tuple[int, ...]], now: float,
) -> None:
    """Bring ``since`` (each unowned key -> when it was first seen unowned) from ``seen`` to
    ``unowned`` (the state's per-service unowned numbers, shared while unchanged): only the
    services whose numbers changed are looked at."""
    for name in changed_keys(seen, unowned):
        before, after = seen.get(name, ()), unowned.get(name, ())
        for n in set(before).difference(after):
            since.pop((name, n), None)
        for n in after:
            since.setdefault((name, n), now)


def unowned_keys(
    desired: Mapping[ServiceName, ServiceSpec],
    instances: Mapping[Key, InstanceRecord],
    taken: Mapping[Key, BadKey] | None = None,
) -> set[Key]:
    """Instance keys that are desired but held by no node (pure helper for grace tracking)."""
    unowned = unowned_by_service(desired, InstanceIndex.build(instances), taken or {})
    return {(name, n) for name, numbers in unowned.items() for n in numbers}
