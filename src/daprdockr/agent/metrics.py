"""The agent's Prometheus metrics, gathered from its parts (documented in the README)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from daprdockr.core.model import INSTANCE_STATES
from daprdockr.core.prometheus import MetricsWriter

if TYPE_CHECKING:
    from daprdockr.adapters.dnsserver import DnsStats
    from daprdockr.agent.main import Agent


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _dns_totals(a: Agent) -> DnsStats:
    """DNS counters of the agent's own server plus its worker processes."""
    total: DnsStats = a.dns.stats_snapshot()
    if a.dns_workers is not None:
        total.add(a.dns_workers.stats_total())
    return total


def render_metrics(agent: Agent, *, cpu_seconds: float) -> str:
    a = agent
    state = a.mirror.state()
    w = MetricsWriter()
    mine: dict[tuple[str, str], int] = {}
    cluster = dict.fromkeys(INSTANCE_STATES, 0)
    for rec in state.instances.values():
        cluster[rec.state] += 1
        if rec.node == a.config.node_id:
            key = (str(rec.service), rec.state)
            mine[key] = mine.get(key, 0) + 1
    w.family("daprdockr_instances", "gauge", "Instances owned by this node, by service and state.",
             [({"service": s, "state": st}, n) for (s, st), n in sorted(mine.items())])
    w.family("daprdockr_cluster_instances", "gauge", "Instances in the whole cluster, by state.",
             [({"state": st}, n) for st, n in cluster.items()])
    w.family("daprdockr_nodes_alive", "gauge", "Live nodes (node keys on a live lease).", [({}, len(state.nodes))])
    w.family("daprdockr_services", "gauge", "Desired services.", [({}, len(state.services))])
    w.family("daprdockr_invalid_keys", "gauge", "Malformed keys under the prefix, skipped (their services frozen).",
             [({"kind": "service"}, len(state.invalid_services)),
              ({"kind": "instance"}, len(state.invalid_instances)),
              ({"kind": "other"}, len(state.skipped) - len(state.invalid_services) - len(state.invalid_instances))])
    r = a.reconciler
    w.family("daprdockr_reconcile_total", "counter", "Reconcile passes.", [({}, r.reconciles)])
    w.family("daprdockr_reconcile_seconds_total", "counter", "Time spent planning.", [({}, r.reconcile_seconds)])
    w.histogram("daprdockr_reconcile_seconds", "Duration of one reconcile pass.", r.latency)
    w.family("daprdockr_actions_total", "counter", "Actions launched, by kind.",
             [({"action": k}, v) for k, v in sorted(r.actions_total.items())])
    w.family("daprdockr_etcd_errors_total", "counter", "Transient etcd failures (calls and watch).",
             [({}, a.store.errors)])
    w.family("daprdockr_lease_healthy", "gauge", "1 while the node's lease is confirmed alive.",
             [({}, 1 if a.heartbeat.healthy else 0)])
    if a.dns is not None:
        d = _dns_totals(a)
        w.family("daprdockr_dns_queries_total", "counter", "DNS queries received (agent and workers).",
                 [({}, d.queries)])
        w.family("daprdockr_dns_answers_total", "counter", "DNS answers sent, by rcode.",
                 [({"rcode": k}, v) for k, v in sorted(d.answers.items())])
        w.family("daprdockr_dns_cache_hits_total", "counter", "Queries answered from pre-encoded cache.",
                 [({}, d.cache_hits)])
        w.family("daprdockr_dns_forwarded_total", "counter", "Queries forwarded upstream.", [({}, d.forwarded)])
        w.family("daprdockr_dns_workers", "gauge", "DNS worker processes alive (besides the agent).",
                 [({}, a.dns_workers.alive if a.dns_workers is not None else 0)])
    if a.nginx is not None:
        n = a.nginx.stats
        w.family("daprdockr_nginx_reloads_total", "counter", "Successful nginx reloads.", [({}, n.reloads)])
        w.family("daprdockr_nginx_reload_failures_total", "counter", "Rejected nginx configs.",
                 [({}, n.reload_failures)])
        w.family("daprdockr_nginx_restarts_total", "counter", "nginx master restarts after a crash.",
                 [({}, n.restarts)])
        w.family("daprdockr_nginx_up", "gauge", "1 while the nginx master runs.", [({}, 1 if a.nginx.healthy else 0)])
    w.family("daprdockr_task_restarts_total", "counter", "Restarts of supervised agent tasks.",
             [({"task": k}, v) for k, v in sorted(a.tasks.restarts.items())])
    w.family("daprdockr_process_resident_memory_bytes", "gauge", "Agent RSS.", [({}, _rss_bytes())])
    w.family("daprdockr_process_cpu_seconds_total", "counter", "Agent CPU time (user+system).",
             [({}, cpu_seconds)])
    w.family("daprdockr_agent_start_time_seconds", "gauge", "Unix time the agent started.",
             [({}, a.heartbeat.node.started_at)])
    return w.text()
