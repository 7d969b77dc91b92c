"""Bad data stops nothing: what this node does about a frozen service's containers and about
malformed (or lease-less) instance keys.  Pure.

A *frozen* service (its spec is malformed and no good version is known) gets no action at all: its
containers and keys stay as they are.  A malformed instance key is a taken number: nobody claims
it and no container of it is stopped.  The node that runs its container rebinds it to its lease
from the container (:class:`~daprdockr.core.planning.actions.Repair`, a compare on the key's
revision) if the key is on its lease or on none; a key nobody can use is deleted with a compare on
its revision (:class:`~daprdockr.core.planning.actions.Purge`) by the node whose lease holds it,
or, on no lease, by the node it names (by any node if it names none that is live).
"""

from __future__ import annotations

from collections.abc import Sequence

from daprdockr.core.containers import ContainerInfo
from daprdockr.core.model import ServiceSpec
from daprdockr.core.planning.actions import Action, Adopt, Key, Purge, Repair
from daprdockr.core.planning.observed import Observed
from daprdockr.core.state import BadKey


def fix_bad_key(
    key: Key, bad: BadKey, group: Sequence[ContainerInfo], obs: Observed, *, spec: ServiceSpec | None
) -> Action | None:
    """What this node does about a malformed (or lease-less) instance key, given its containers of
    that instance (``group``, maybe empty).  Never a stop: a running container of ours rebinds the
    key to our lease (a compare on its revision); a key nobody can use is deleted, by the node
    whose lease holds it, or, on no lease, by the node it names (anyone, if it names no live node).
    ``spec``: the desired spec of the key's service, if any (a repaired record's health check)."""
    running = [c for c in group if c.running]
    if running and bad.lease in (0, obs.lease):
        return Repair(key=key, bad=bad, container=max(running, key=lambda c: c.created), spec=spec)
    if bad.lease == obs.lease or (not bad.lease and (bad.node == obs.node_id or bad.node not in obs.nodes)):
        return Purge(key=key, bad=bad)
    return None


def keep_frozen(key: Key, group: Sequence[ContainerInfo], obs: Observed, out: list[Action]) -> None:
    """A frozen service's container is kept exactly as it is, and so is its key: nothing starts or
    stops, but a running container's key is still bound to our current lease (after a restart of
    this agent) so that it does not expire and get re-run elsewhere.  A container without a key is
    not given one (that would route it)."""
    if key in obs.bad_instances:
        return
    running = [c for c in group if c.running]
    if not running:
        return
    c = max(running, key=lambda c: c.created)
    rec = obs.instances.get(key)
    if rec is not None and rec.node == obs.node_id and rec.lease != obs.lease:
        out.append(Adopt(container=c, spec=None, record=rec))
