"""The rows of ``svc ls``, ``status`` and ``nodes``: from an agent's mirror when one on this host
answers, else from every key in etcd.

Reading and decoding every key costs the CLI about a second per 50 000 instances (BENCHMARKS.md,
"Scale", "svc ls and status read from an agent"); every agent already holds that state from its
watch.  So, as Kubernetes serves consistent reads from its watch cache, the CLI first asks etcd
for the newest write under the prefix (one Range request, keys only, one key), then asks an agent
(``--api``, else the agents whose node records publish an API address on this host) for its rows
once its mirror holds that revision (``GET /v1/cluster?min_revision=R``).  Any failure falls back
to the direct read; ``--from-etcd`` forces it.  A delete leaves no key whose revision the CLI
could ask for: a key deleted in the agent's watch delay (milliseconds) may still be counted.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.clikit.logs import on_this_host
from daprdockr.core.records import NodeRecord
from daprdockr.core.state import decode_state
from daprdockr.core.status import node_rows, service_rows
from daprdockr.errors import DaprDockrError

log = logging.getLogger(__name__)

AGENT_WAIT = 2.0  # seconds an agent may take to reach the revision asked for
AGENTS_TRIED = 2


@dataclass(frozen=True, slots=True)
class ClusterRows:
    services: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    skipped_keys: list[str]
    revision: int
    node_records: Mapping[str, NodeRecord]  # (read from etcd either way: small)
    source: str  # "etcd", or "agent <node> at <host:port>"


def _loopback_first(api: str) -> tuple[bool, str]:
    host = api.rpartition(":")[0].strip("[]")
    try:
        return not ipaddress.ip_address(host).is_loopback, api
    except ValueError:
        return True, api


def local_agents(nodes: Mapping[str, NodeRecord]) -> list[str]:
    """The API addresses of the agents on this host (loopback first)."""
    return sorted({n.api for n in nodes.values() if n.api and on_this_host(n.api)}, key=_loopback_first)


def _rows(data: object) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DaprDockrError("the agent's answer has no rows")
    return data


async def _ask(api: str, *, min_revision: int) -> dict[str, Any]:
    url = f"http://{api}/v1/cluster"
    timeout = aiohttp.ClientTimeout(total=AGENT_WAIT + 3, connect=1)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
                url, params={"min_revision": str(min_revision), "wait": str(AGENT_WAIT)}) as resp:
            if resp.status != 200:
                raise DaprDockrError(f"agent at {api} answered {resp.status}: {(await resp.text())[:200]}")
            data = await resp.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise DaprDockrError(f"agent at {api}: {exc or type(exc).__name__}") from exc
    if not isinstance(data, dict):
        raise DaprDockrError(f"agent at {api}: not a JSON object")
    return data


async def _from_agent(store: EtcdStore, *, apis: list[str], nodes: Mapping[str, NodeRecord]) -> ClusterRows | None:
    newest, _ = await store.newest_write_under(store.schema.root)
    for api in apis[:AGENTS_TRIED]:
        try:
            data = await _ask(api, min_revision=newest)
            return ClusterRows(
                services=_rows(data.get("services")), nodes=_rows(data.get("nodes")),
                skipped_keys=[str(k) for k in data.get("skipped_keys") or []], revision=int(data["revision"]),
                node_records=nodes, source=f"agent {data.get('node', '?')} at {api}")
        except (DaprDockrError, KeyError, TypeError, ValueError) as exc:
            log.info("reading etcd directly: %s", exc)
    return None


async def cluster_rows(store: EtcdStore, *, api: str | None = None, from_etcd: bool = False) -> ClusterRows:
    """The cluster's service and node rows: from an agent (``api``, else one on this host) unless
    ``from_etcd``; from every key in etcd when none answers."""
    if not from_etcd:
        kvs, revision = await store.read_prefix(store.schema.nodes_prefix)
        nodes = decode_state(store.schema, kvs, revision=revision).nodes
        rows = await _from_agent(store, apis=[api] if api else local_agents(nodes), nodes=nodes)
        if rows is not None:
            return rows
    state = await store.snapshot()
    return ClusterRows(services=service_rows(state), nodes=node_rows(state, now=time.time()),
                       skipped_keys=[k for k, _ in state.skipped], revision=state.revision,
                       node_records=state.nodes, source="etcd")
