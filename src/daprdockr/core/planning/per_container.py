"""The plan for this node's containers: keep one per instance, stop what is not ours or not
desired, adopt, restart, roll to a new spec, refresh a stale record.  Pure.

Containers of this node whose key another node holds (split brain after a partition, a restart
slower than the TTL, or a takeover) are stopped, only after their removal from every router is
confirmed (``Stop.removed_at``).  A well-formed record on our lease that names another node is
garbage: it is rewritten as ours, never obeyed.

Rolling updates.  A running container of ours whose spec hash is not the spec's is replaced by
:class:`~daprdockr.core.planning.actions.Roll` only while the service's rollout is not paused, no
slot holds a failed replacement towards the same version (the rollout is about to be rolled back
or paused), and fewer than ``update.parallel`` replacement slots are taken (the executor takes one
with a transaction, so the bound holds across the cluster) (:func:`may_roll`).  A crashed
container is restarted with the new spec at once (it serves nothing).
"""

from __future__ import annotations

from collections.abc import Mapping

from daprdockr.core.containers import ContainerInfo, LocalContainers
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName, by_instance
from daprdockr.core.planning.actions import Action, Adopt, Key, Refresh, Release, Roll, Start, Stop
from daprdockr.core.planning.bad_data import fix_bad_key, keep_frozen
from daprdockr.core.planning.observed import Observed, Wake, is_busy, is_ours
from daprdockr.core.records import InstanceRecord


def _container_ports_match(rec: InstanceRecord, c: ContainerInfo) -> bool:
    return rec.ports == c.ports and rec.container_id == c.id and rec.spec_hash == c.spec_hash


def plan_containers(
    desired: Mapping[ServiceName, ServiceSpec], obs: Observed, out: list[Action], wake: Wake
) -> set[Key]:
    """Actions for this node's containers; returns the keys they cover."""
    covered: set[Key] = set()
    by_key: dict[Key, list[ContainerInfo]] = {}
    listed = obs.containers
    if obs.scope is not None and isinstance(listed, LocalContainers):
        listed = listed.of(obs.scope)  # (indexed per listing: the scope's containers, not all of them)
    for c in listed:
        if c.node == obs.node_id and (obs.scope is None or c.service in obs.scope):
            by_key.setdefault(c.key, []).append(c)
    for key, group in sorted(by_key.items(), key=by_instance):
        covered.add(key)
        if is_busy(key, obs, wake):
            continue
        if key[0] in obs.frozen:
            keep_frozen(key, group, obs, out)
            continue
        bad = obs.bad_instances.get(key)
        if bad is not None:
            fix = fix_bad_key(key, bad, group, obs, spec=desired.get(key[0]))
            if fix is not None:
                out.append(fix)
            continue  # someone else's (or an old lease's) key: never stop a container over bad data
        # Keep the best candidate (running, the one our record names, newest); stop any duplicates
        # (a replacement left behind by a restart mid-rollout loses to the container it replaced).
        rec = obs.instances.get(key)
        named = rec.container_id if rec is not None and is_ours(rec, obs) else ""
        group = sorted(group, key=lambda c: (c.running, c.id == named, c.created), reverse=True)
        c, extras = group[0], group[1:]
        spec = desired.get(c.service)
        out.extend(Stop(container=x, reason="duplicate container", spec=spec) for x in extras)
        wanted = spec is not None and c.number <= spec.instances
        if not wanted or spec is None:
            if rec is not None and is_ours(rec, obs):
                out.append(Release(record=rec, container=c, reason="not desired", spec=spec))
            else:
                out.append(Stop(container=c, reason="not desired", spec=spec))
            continue
        if rec is None:
            if c.running and c.spec_hash == spec.runtime_hash and not obs.drain_me:
                if obs.claiming:
                    out.append(Adopt(container=c, spec=spec))
                # else our lease is uncertain (it expired while we were cut off, or we are settling
                # after a start): keep serving, and adopt once we can claim again
            else:
                out.append(Stop(container=c, reason="unclaimed and stale" if not obs.drain_me else "draining",
                                spec=spec))
            continue
        if not is_ours(rec, obs):
            # another node holds the key (it took the instance over, or a split brain): our
            # container leaves every router first if it may still be routed
            out.append(Stop(container=c, reason=f"instance is held by node {rec.node}",
                            removed_at=rec.mod_revision if c.running else 0, spec=spec))
            continue
        _plan_own(rec, c, spec, obs, out, wake)
    return covered


def _plan_own(
    rec: InstanceRecord, c: ContainerInfo, spec: ServiceSpec, obs: Observed, out: list[Action], wake: Wake
) -> None:
    """The action for our instance ``rec`` whose best container here is ``c``."""
    key = rec.key_tuple
    if not c.running:
        if obs.drain_me:
            out.append(Release(record=rec, container=c, reason="draining", spec=spec))
        elif wake.after(obs.retry_at.get(key, 0.0), service=rec.service):
            out.append(Start(record=rec, spec=spec, old=c, reason="container exited"))
    elif rec.lease != obs.lease:
        out.append(Adopt(container=c, spec=spec, record=rec))
    elif c.paused:
        _plan_paused(rec, c, spec, obs, out, wake)
    elif c.spec_hash != spec.runtime_hash and may_roll(spec, obs):
        out.append(Roll(record=rec, spec=spec, old=c))
    elif c.id in obs.restart and c.spec_hash == spec.runtime_hash:
        out.append(Start(record=rec, spec=spec, old=c, reason="unhealthy"))
    elif (rec.state != "running" or not _container_ports_match(rec, c) or rec.node != obs.node_id
          or rec.health != obs.health.get(c.id, rec.health)):
        out.append(Refresh(record=rec, container=c, spec=spec))  # (a record on our lease naming another node: garbage)


def _plan_paused(
    rec: InstanceRecord, c: ContainerInfo, spec: ServiceSpec, obs: Observed, out: list[Action], wake: Wake
) -> None:
    """Our container is paused (``docker pause``): its record says so (nothing serves it), and it is
    kept as it is (no restart, no rolling replacement) until it is unpaused, or until it has been
    paused for the spec's ``pause_limit`` (if any): then it is replaced."""
    since = obs.paused_since.get(c.id, obs.now)
    if spec.pause_limit and wake.after(since + spec.pause_limit, service=rec.service):
        out.append(Start(record=rec, spec=spec, old=c, reason=f"paused for longer than {spec.pause_limit:g}s"))
    elif rec.state != "paused" or not _container_ports_match(rec, c) or rec.node != obs.node_id:
        out.append(Refresh(record=rec, container=c, spec=spec))


def may_roll(spec: ServiceSpec, obs: Observed) -> bool:
    """A replacement of an outdated instance of ``spec`` may start: the rollout is not paused, no
    replacement towards this version has failed without the rollout being decided yet (its slot
    is marked failed until then), and a replacement slot looks free (taking it is a transaction;
    this only avoids hopeless tries)."""
    rollout = obs.rollouts.get(spec.name)
    if rollout is not None and rollout.target == spec.runtime_hash and rollout.state == "paused":
        return False
    slots = obs.slots.get(spec.name, {})
    if any(s.failed and s.target == spec.runtime_hash for s in slots.values()):
        return False
    return len(slots) < spec.update.parallel
