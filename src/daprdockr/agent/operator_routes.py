"""The operator's endpoints of an agent's API, wired from the agent's parts: the actions
(:mod:`.action_routes` over :mod:`.actions`) and the merged service log (:mod:`.service_logs`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from daprdockr.adapters.lifecycle_store import LifecycleStore
from daprdockr.agent.action_routes import ActionRoutes
from daprdockr.agent.actions import AgentActions, Exclusive, InstanceRestarts, SpecActions
from daprdockr.agent.api import listens_beyond_loopback
from daprdockr.agent.config import AgentConfig
from daprdockr.agent.peer_api import PeerApi
from daprdockr.agent.runtime import AgentRuntime
from daprdockr.agent.service_logs import ServiceLogs
from daprdockr.core.mirror import StateMirror


class OperatorParts(Protocol):
    """What the operator's endpoints use of an agent (:class:`~daprdockr.agent.main.Agent` has them)."""

    @property
    def config(self) -> AgentConfig: ...

    @property
    def runtime(self) -> AgentRuntime: ...

    @property
    def reconciler(self) -> Exclusive: ...

    @property
    def mirror(self) -> StateMirror: ...

    @property
    def lifecycle(self) -> LifecycleStore: ...


def operator_routes(agent: OperatorParts, *, token: str) -> list[Callable[[web.Application], None]]:
    """The ``add_routes`` of the action and merged-log endpoints (``token``: the agent's API token)."""
    cfg = agent.config
    state = agent.mirror.state
    peers = PeerApi(token=token)
    actions = AgentActions(
        specs=SpecActions(store=agent.lifecycle, state=state),
        restarts=InstanceRestarts(node_id=cfg.node_id, runtime=agent.runtime, reconciler=agent.reconciler,
                                  state=state, peers=peers, stop_timeout=cfg.stop_timeout))
    beyond = cfg.api_listen is not None and listens_beyond_loopback(cfg.api_listen[0])
    logs = ServiceLogs(node_id=cfg.node_id, state=state, logs=agent.runtime, peers=peers,
                       read_token=token if beyond else "")
    return [ActionRoutes(actions=actions, token=token).add_routes, logs.add_routes]
