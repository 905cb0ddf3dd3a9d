"""Resource for an agent's webhook deliveries: each event's outcome, newest first."""

import falcon

from agentainer.agents.service import AgentService
from agentainer.api.envelope import ok
from agentainer.api.lifecycle import param, whole_number
from agentainer.webhooks.outbox import HISTORY, Webhooks


class WebhooksResource:
    """GET /agents/{id}/webhooks: the newest ``limit`` deliveries (at most HISTORY)."""

    def __init__(self, agents: AgentService, webhooks: Webhooks) -> None:
        self._agents = agents
        self._webhooks = webhooks

    def on_get(self, req: falcon.Request, resp: falcon.Response, agent_id: str) -> None:
        agent_id = self._agents.resolve(agent_id)
        limit = min(param(req, "limit", whole_number) or HISTORY, HISTORY)
        deliveries = self._webhooks.deliveries(agent_id, limit=limit)
        ok(resp, f"{len(deliveries)} webhook deliver{'y' if len(deliveries) == 1 else 'ies'}",
           {"agent_id": agent_id, "deliveries": deliveries})
