"""The agent's Prometheus metrics, written from its read-only view (documented in the README)."""

from __future__ import annotations

import os

from daprdockr.agent.view import AgentView
from daprdockr.core.etcd_health import ALARMS
from daprdockr.core.prometheus import MetricsWriter
from daprdockr.core.records import HOLLOW_RUNTIME, INSTANCE_STATES


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def render_metrics(view: AgentView, *, cpu_seconds: float) -> str:
    state = view.state()
    w = MetricsWriter()
    mine: dict[tuple[str, str], int] = {}
    cluster = dict.fromkeys(INSTANCE_STATES, 0)
    for rec in state.instances.values():
        cluster[rec.state] += 1
        if rec.node == view.node_id:
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
    r = view.reconcile()
    w.family("daprdockr_reconcile_total", "counter", "Reconcile passes.", [({}, r.passes)])
    w.family("daprdockr_reconcile_seconds_total", "counter", "Time spent planning.", [({}, r.seconds)])
    w.histogram("daprdockr_reconcile_seconds", "Duration of one reconcile pass.", r.latency)
    w.family("daprdockr_actions_total", "counter", "Actions launched, by kind.",
             [({"action": k}, v) for k, v in sorted(r.actions.items())])
    w.family("daprdockr_containers_unremovable", "gauge",
             "Containers Docker could not remove yet (retried in the background; their instances run anew).",
             [({}, len(r.unremovable))])
    w.family("daprdockr_containers_reaped_total", "counter", "Containers removed by the background retry.",
             [({}, r.reaped)])
    w.family("daprdockr_etcd_errors_total", "counter", "Transient etcd failures (calls and watch).",
             [({}, view.etcd_errors())])
    etcd = view.etcd_health()
    w.family("daprdockr_etcd_db_size_bytes", "gauge", "Size of etcd's database (the member this agent asks).",
             [({}, etcd.db_size)])
    w.family("daprdockr_etcd_db_size_in_use_bytes", "gauge",
             "Bytes of etcd's database in use (the rest is free after compactions; defrag returns it).",
             [({}, etcd.db_size_in_use)])
    w.family("daprdockr_etcd_quota_bytes", "gauge", "etcd's backend quota (--etcd-quota-bytes).", [({}, etcd.quota)])
    w.family("daprdockr_etcd_alarm", "gauge", "1 while etcd has this alarm raised (every write fails).",
             [({"alarm": a}, 1 if a in etcd.alarms else 0) for a in ALARMS])
    w.family("daprdockr_etcd_compactions_total", "counter", "Compactions of etcd's history this agent made.",
             [({}, etcd.compactions)])
    w.family("daprdockr_etcd_compacted_revision", "gauge", "The revision this agent last compacted etcd to.",
             [({}, etcd.compacted_revision)])
    w.family("daprdockr_lease_healthy", "gauge", "1 while the node's lease is confirmed alive.",
             [({}, 1 if view.lease().healthy else 0)])
    dns = view.dns()
    if dns is not None:
        w.family("daprdockr_dns_queries_total", "counter", "DNS queries received (agent and workers).",
                 [({}, dns.queries)])
        w.family("daprdockr_dns_answers_total", "counter", "DNS answers sent, by rcode.",
                 [({"rcode": k}, v) for k, v in sorted(dns.answers.items())])
        w.family("daprdockr_dns_cache_hits_total", "counter", "Queries answered from pre-encoded cache.",
                 [({}, dns.cache_hits)])
        w.family("daprdockr_dns_forwarded_total", "counter", "Queries forwarded upstream.", [({}, dns.forwarded)])
        w.family("daprdockr_dns_limited_total", "counter",
                 "Answers to clients outside the allowed networks dropped or truncated by rate limiting.",
                 [({}, dns.limited)])
        w.family("daprdockr_dns_workers", "gauge", "DNS worker processes alive (besides the agent).",
                 [({}, dns.workers_alive)])
    nginx = view.nginx()
    if nginx is not None:
        w.family("daprdockr_nginx_table_updates_total", "counter", "Routing table changes posted to nginx (no reload).",
                 [({}, nginx.table_updates)])
        w.family("daprdockr_nginx_table_update_failures_total", "counter", "Routing table posts that failed.",
                 [({}, nginx.update_failures)])
        w.family("daprdockr_nginx_retries_total", "counter", "Requests nginx tried on another instance.",
                 [({}, nginx.retries)])
        w.family("daprdockr_nginx_ejections_total", "counter",
                 "Instances nginx skipped for a while after a refused or timed out try.", [({}, nginx.ejections)])
        w.family("daprdockr_nginx_routes", "gauge", "Hosts in nginx's routing table.", [({}, nginx.routes)])
        w.family("daprdockr_nginx_restarts_total", "counter", "nginx master restarts after a crash.",
                 [({}, nginx.restarts)])
        w.family("daprdockr_nginx_up", "gauge", "1 while the nginx master runs.", [({}, 1 if nginx.healthy else 0)])
        w.family("daprdockr_tls_handshakes_total", "counter",
                 "TLS handshakes nginx chose a certificate for (resumed sessions are not counted).",
                 [({}, nginx.handshakes)])
        w.family("daprdockr_tls_certificates", "gauge", "Certificates from etcd this node's nginx serves.",
                 [({}, nginx.certificates)])
        w.family("daprdockr_tls_ocsp_staples", "gauge", "Certificates served with a current OCSP staple.",
                 [({}, nginx.ocsp_staples)])
        w.family("daprdockr_tls_ocsp_fetch_failures_total", "counter",
                 "OCSP fetches that failed or gave an unusable answer (served without a new staple).",
                 [({}, nginx.ocsp_failures)])
        w.family("daprdockr_tls_certificate_not_after_seconds", "gauge",
                 "Unix time each certificate in etcd expires, by host and source (manual, acme).",
                 [({"host": h, "source": src}, t) for h, src, t in nginx.expiry])
    acme = view.acme()
    if acme is not None:
        w.family("daprdockr_acme_orders_total", "counter",
                 "ACME orders this agent finished, by result (issued, failed: backing off, see cert ls).",
                 [({"result": k}, v) for k, v in sorted(acme.orders.items())])
        w.family("daprdockr_acme_ordering", "gauge", "Hosts this agent orders a certificate for right now.",
                 [({}, acme.ordering)])
    w.family("daprdockr_routing_revision_applied", "gauge",
             "etcd revision of the newest removal this node's nginx and DNS both applied (published for owners).",
             [({}, view.applied_revision())])
    w.family("daprdockr_task_restarts_total", "counter", "Restarts of supervised agent tasks.",
             [({"task": k}, v) for k, v in sorted(view.task_restarts().items())])
    w.family("daprdockr_process_resident_memory_bytes", "gauge", "Agent RSS.", [({}, _rss_bytes())])
    w.family("daprdockr_process_cpu_seconds_total", "counter", "Agent CPU time (user+system).",
             [({}, cpu_seconds)])
    w.family("daprdockr_agent_start_time_seconds", "gauge", "Unix time the agent started.",
             [({}, view.started_at)])
    w.family("daprdockr_node_hollow", "gauge", "1 on a hollow node (--runtime hollow: containers in memory).",
             [({}, 1 if view.runtime == HOLLOW_RUNTIME else 0)])
    return w.text()
