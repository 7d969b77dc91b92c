"""Per-event cost of the agent's whole state path at 1k, 10k and 100k instances (100 nodes, or ``--nodes``).

Pure Python on realistic records (specs with env and labels, one history entry per service,
node and ``applied`` records), as one agent (node ``n000``) of the cluster sees it, holding its
1/100th of the instances as running containers.  One *event* is a watch event that changes one
instance record of another node (it turns ``failed``, the next event turns it ``running`` again,
so half the events take a peer out of DNS and nginx).  The agent's path per event, timed as one:

* the mirror applies it (the informer: ``apply`` and ``new_problems``) and hands out the state;
* the reconciler's pass: the health of this node's containers for their records (the health
  monitor's ``observed``), then ``plan_next`` on an ``Observed`` built as ``reconcile_once``
  builds it (its scope from ``plan_scope``: a full pass runs every 5 s besides, not timed here);
* the fanout: the local view, the nginx routing table and its update text, the DNS zone, the
  served-set check, and the frame for one DNS worker process (pickled).

Baseline, in the same run: a *fresh full build* of the same state per event, as the agent did
before (``assemble_state`` over every key, every container's health asked, the planner over a
plain mapping and list, ``routing_table``,
``Zone(state)`` and the whole state pickled to the worker).  Also the full load (``reset``) and
the status views (``service_rows``, ``instance_rows`` of one service), and the safety-net full
pass (the planner over every service: the loop runs one every few seconds, paced by its cost).

Targets: one changed instance <= 2 ms at 100 000 instances and <= 1.5x per 10x; full load of
100 000 <= 3 s; ``svc ls`` / ``status`` rows at 100 000 <= 2 s.

    .venv/bin/python bench/scale_bench.py [--sizes 1000,10000,100000] [--events 200] [--nodes 100]
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from daprdockr.core.containers import ContainerInfo, LocalContainers
from daprdockr.core.dns.delta import zone_delta
from daprdockr.core.dns.zone import Zone
from daprdockr.core.health import PerContainerHealth
from daprdockr.core.keys import KeySchema
from daprdockr.core.local_view import LocalView, local_view
from daprdockr.core.mirror import StateMirror, WatchEvent
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.planning.observed import Observed
from daprdockr.core.planning.plan import plan_next
from daprdockr.core.planning.rebalance import EvenCache
from daprdockr.core.planning.scope import PassInputs, plan_scope
from daprdockr.core.routing import RoutingCache, routed_removed, routing_table, table_update
from daprdockr.core.state import ClusterState, RawKV, assemble_state, decode_entry
from daprdockr.core.status import instance_rows, service_rows
from daprdockr.health import HealthMonitor

SCHEMA = KeySchema("/daprdockr")
NODES = 100
PER_SERVICE = 100
ME = "n000"


def spec_of(i: int) -> ServiceSpec:
    return ServiceSpec.from_dict({
        "image": f"registry.example.com/team/app{i}:1.{i % 7}", "instances": PER_SERVICE,
        "http_host": f"app{i}.example.com", "http_port": 8080, "ports": [8080],
        "env": {f"VAR_{k}": f"value-{k}-{i}" for k in range(8)},
        "labels": {f"com.example.label{k}": f"v{k}" for k in range(4)},
    }, name=ServiceName.parse(f"app{i}.group{i % 10}"))


def record(spec: ServiceSpec, number: int, *, state: str = "running") -> tuple[str, dict[str, object]]:
    node = (number - 1) % NODES
    return f"n{node:03d}", {
        "node": f"n{node:03d}", "address": f"127.0.{node // 250}.{node % 250 + 1}", "state": state,
        "ports": {"8080/tcp": 20000 + number}, "container_id": f"{hash((spec.name, number)) & (1 << 64) - 1:064x}",
        "spec_hash": spec.runtime_hash, "since": 1_700_000_000.0, "health": "",
    }


def cluster(instances: int) -> tuple[list[RawKV], list[ServiceSpec]]:
    kvs: list[RawKV] = []
    rev = 1
    specs = [spec_of(i) for i in range(instances // PER_SERVICE)]
    for n in range(NODES):
        lease = 1000 + n
        kvs.append(RawKV(key=SCHEMA.node(f"n{n:03d}"), lease=lease, create_revision=rev, mod_revision=rev,
                         value=json.dumps({"address": f"127.0.{n // 250}.{n % 250 + 1}", "capacity": 0,
                                           "started_at": 1.7e9, "dns": "127.0.0.1:53", "http": "127.0.0.1:80",
                                           "api": f"192.0.2.{n % 250 + 1}:7000"}).encode()))
        kvs.append(RawKV(key=SCHEMA.applied(f"n{n:03d}"), value=b'{"revision": 1}', lease=lease, mod_revision=rev))
    for spec in specs:
        body = spec.to_dict()
        kvs.append(RawKV(key=SCHEMA.service(spec.name), value=json.dumps(body).encode(), mod_revision=rev))
        kvs.append(RawKV(key=SCHEMA.history(spec.name, 1), mod_revision=rev,
                         value=json.dumps({"version": 1, "spec": body, "at": 1.7e9, "cause": "set"}).encode()))
        for number in range(1, PER_SERVICE + 1):
            rev += 1
            node, value = record(spec, number)
            kvs.append(RawKV(key=SCHEMA.instance(spec.name, number), value=json.dumps(value).encode(),
                             lease=1000 + int(node[1:]), create_revision=rev, mod_revision=rev))
    return kvs, specs


def events(specs: list[ServiceSpec], *, count: int, start: int) -> list[WatchEvent]:
    """Alternately: an instance of another node fails, then runs again."""
    out = []
    for i in range(count):
        spec = specs[(i // 2 * 7) % len(specs)]
        number = (i // 2 * 13) % PER_SERVICE + 1
        if (number - 1) % NODES == 0:
            number += 1  # (not one of ours)
        node, value = record(spec, number, state="failed" if i % 2 == 0 else "running")
        out.append(WatchEvent(kind="put", key=SCHEMA.instance(spec.name, number), value=json.dumps(value).encode(),
                              revision=start + i, lease=1000 + int(node[1:]), create_revision=start))
    return out


class NoExec:
    async def exec_ok(self, container_id: str, cmd: Sequence[str], *, within: float) -> bool:
        return False

    async def docker_health(self, container_id: str) -> str:
        return ""


def health_monitor(mirror: Callable[[], ClusterState]) -> HealthMonitor:
    return HealthMonitor(runtime=NoExec(), address="127.0.0.1", containers=list, specs=lambda: mirror().services,
                         history=lambda: mirror().history)


def my_containers(state: ClusterState) -> LocalContainers:
    return LocalContainers(ContainerInfo(id=r.container_id, service=r.service, number=r.number, node=ME,
                                         spec_hash=r.spec_hash, running=True, ports=r.ports, created=1.0)
                           for r in state.index.of_node(ME).values())


def observed(state: ClusterState, containers: Sequence[ContainerInfo], *, fast: bool, even: EvenCache) -> Observed:
    return Observed(node_id=ME, lease=1000, now=100.0, instances=state.instances if fast else dict(state.instances),
                    nodes=state.nodes, containers=containers, capacity=0, claim_grace=1.0, claiming=True,
                    frozen=state.frozen, bad_instances=state.invalid_instances, rollouts=state.rollouts,
                    slots=state.slots, draining=state.draining, rebalance=True, wall=1.8e9,
                    unowned=state.unowned if fast else None, even=even if fast else None)


class Agent:
    """One agent's state path, kept per event (the code under test)."""

    def __init__(self, kvs: list[RawKV], revision: int) -> None:
        self.mirror = StateMirror(schema=SCHEMA)
        self.mirror.reset(kvs, revision=revision)
        state = self.mirror.state()
        self.containers = my_containers(state)
        self.health = health_monitor(self.mirror.state)
        self.even = EvenCache()
        self.routes = RoutingCache()
        self.table = self.routes.table(state)
        self.zone = Zone(state)
        self.served = state
        self.local = LocalView(node_id=ME)
        self.planned: ClusterState | None = None
        self.inputs: PassInputs | None = None
        self.stages: list[tuple[float, float, float]] = []  # (informer, planner pass, fanout) per event

    def event(self, ev: WatchEvent) -> int:
        t0 = time.perf_counter()
        self.mirror.apply(ev)
        self.mirror.new_problems()
        state = self.mirror.state()
        t1 = time.perf_counter()
        health, restart = self.health.observed(self.containers, state.services)
        inputs = PassInputs(lease=1000, claiming=True, capacity=0, nodes=state.nodes, containers=self.containers,
                            busy=frozenset(), health=health, restart=restart, held=frozenset(), paused=False)
        scope = plan_scope(last=self.inputs, inputs=inputs, old=self.planned, new=state, now=100.0, wakes={},
                           last_full=99.0)
        self.inputs, self.planned = inputs, state
        planned = plan_next(state.services, replace(observed(state, self.containers, fast=True, even=self.even),
                                                    scope=scope, health=health, restart=restart))
        t2 = time.perf_counter()
        view = self.local.view(state, routable=self.containers)
        table = self.routes.table(view)
        body = table_update(self.table, table, generation=1)
        self.table = table
        self.zone.update(view)
        frame = pickle.dumps(zone_delta(self.served, view), protocol=5)
        routed_removed(self.served, view)
        self.served = view
        t3 = time.perf_counter()
        self.stages.append((t1 - t0, t2 - t1, t3 - t2))
        return len(planned.actions) + len(body) + len(frame)


    def full_pass(self) -> int:
        """The safety-net pass over every service (``scope`` None), as the loop runs it now and then."""
        state = self.mirror.state()
        health, restart = self.health.observed(self.containers, state.services)
        planned = plan_next(state.services, replace(observed(state, self.containers, fast=True, even=self.even),
                                                    scope=None, health=health, restart=restart))
        return len(planned.actions)


class FreshBuild:
    """The baseline: the same path rebuilding everything per event."""

    def __init__(self, kvs: list[RawKV], revision: int) -> None:
        self.kvs = {kv.key: kv for kv in kvs}
        self.decoded = {kv.key: decode_entry(SCHEMA, kv) for kv in kvs}
        self.revision = revision
        state = assemble_state(SCHEMA, ((kv, self.decoded[kv.key]) for kv in kvs), revision=revision)
        self.local = my_containers(state)
        self.containers = list(self.local)
        self.state = state
        self.health = health_monitor(lambda: self.state)

    def event(self, ev: WatchEvent) -> int:
        kv = self.kvs[ev.key] = ev.as_kv()
        self.decoded[ev.key] = decode_entry(SCHEMA, kv)
        state = self.state = assemble_state(SCHEMA, ((kv, self.decoded[k]) for k, kv in self.kvs.items()),
                                            revision=ev.revision)
        health, restart = PerContainerHealth.observed(self.health, self.local, state.services)
        planned = plan_next(state.services, replace(observed(state, self.containers, fast=False, even=EvenCache()),
                                                    health=health, restart=restart))
        view = local_view(state, node_id=ME, routable=self.containers)
        table = routing_table(view)
        Zone(view)
        frame = pickle.dumps(view, protocol=5)
        return len(planned.actions) + len(table) + len(frame)


def timed(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def per_event(subject: Agent | FreshBuild, evs: list[WatchEvent]) -> float:
    samples = []
    for ev in evs:
        t0 = time.perf_counter()
        subject.event(ev)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    global NODES
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--baseline-events", type=int, default=6, help="events for the fresh build (slow at 100k)")
    ap.add_argument("--nodes", type=int, default=NODES, help="nodes of the cluster (3: each holds a third)")
    args = ap.parse_args()
    NODES = args.nodes
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"# scale_bench {datetime.now().isoformat(timespec='seconds')}: {NODES} nodes, "
          f"{PER_SERVICE} instances per service, median per event")
    print(f"{'instances':>10} {'per event':>10} {'fresh build':>12} {'speed-up':>9} {'full load':>10} "
          f"{'svc ls rows':>12} {'ps SERVICE':>11} {'full pass':>10}")
    previous: float | None = None
    growth = []
    stages: list[tuple[int, float, float, float]] = []
    for size in sizes:
        kvs, specs = cluster(size)
        revision = len(kvs) + 10
        evs = events(specs, count=args.events, start=revision + 1)
        load = timed(lambda kvs=kvs, revision=revision: StateMirror(schema=SCHEMA).reset(kvs, revision=revision),
                     3 if size <= 10_000 else 1)
        agent = Agent(kvs, revision)
        agent_time = per_event(agent, evs)
        fresh_time = per_event(FreshBuild(kvs, revision), evs[:args.baseline_events])
        stages.append((size, *(statistics.median(s[i] for s in agent.stages) for i in range(3))))
        mirror = StateMirror(schema=SCHEMA)
        mirror.reset(kvs, revision=revision)
        state = mirror.state()
        rows = timed(lambda state=state: service_rows(state), 3)
        full_pass = timed(lambda agent=agent: agent.full_pass(), 3)
        one = timed(lambda state=state, name=specs[0].name: instance_rows(state, now=1.8e9, service=name), 20)
        print(f"{size:>10} {agent_time * 1e3:>8.3f}ms {fresh_time * 1e3:>10.1f}ms {fresh_time / agent_time:>8.0f}x "
              f"{load:>9.2f}s {rows * 1e3:>10.1f}ms {one * 1e3:>9.3f}ms {full_pass * 1e3:>8.1f}ms")
        if previous is not None:
            growth.append(agent_time / previous)
        previous = agent_time
    if growth:
        print("growth per 10x of the cluster (per event): " + ", ".join(f"{g:.2f}x" for g in growth))
    print("where an event's time goes (median ms): informer + state / planner pass / fanout (view, nginx table, "
          "DNS zone, worker frame, served check)")
    for size, informer, planner, fanout in stages:
        print(f"{size:>10} {informer * 1e3:>8.3f} / {planner * 1e3:.3f} / {fanout * 1e3:.3f}")


if __name__ == "__main__":
    main()
