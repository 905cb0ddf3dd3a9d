"""Resources for health and metrics: per agent, and the control plane's Prometheus view."""

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from agentainer import units
from agentainer.agents.observations import HealthRecords, MetricsHistory
from agentainer.agents.service import AgentService
from agentainer.api.envelope import ok
from agentainer.api.lifecycle import param
from agentainer.monitor.metrics import ControlPlaneCollector

MAX_HISTORY = 24 * 3600.0


class AgentHealthResource:
    """GET /agents/{id}/health: the monitor's last probe of the agent."""

    def __init__(self, agents: AgentService, health: HealthRecords) -> None:
        self._agents = agents
        self._health = health

    def on_get(self, req: falcon.Request, resp: falcon.Response, agent_id: str) -> None:
        agent = self._agents.get(agent_id)
        check = agent.spec.health_check
        record = self._health.get(agent.id) or {"healthy": None, "failures": 0,
                                                "last_check": None, "status_code": None,
                                                "message": "not probed yet"}
        data = {"agent_id": agent.id, "name": agent.name, "status": agent.status.value,
                "monitored": check is not None,
                "health_check": check and {"endpoint": check.endpoint,
                                           "interval": check.interval,
                                           "timeout": check.timeout, "retries": check.retries},
                "restarts": agent.restarts, "last_error": agent.last_error, **record}
        if check is None:
            data["message"] = "no health check (deploy with --health-endpoint)"
        verdict = {True: "healthy", False: "unhealthy"}.get(record["healthy"], data["message"])
        ok(resp, f"agent {agent.name}: {verdict}", data)


class AgentMetricsResource:
    """GET /agents/{id}/metrics (live) and /agents/{id}/metrics/history?duration=1h."""

    def __init__(self, agents: AgentService, history: MetricsHistory) -> None:
        self._agents = agents
        self._history = history

    def on_get(self, req: falcon.Request, resp: falcon.Response, agent_id: str) -> None:
        ok(resp, "live metrics", {"agent_id": self._agents.resolve(agent_id),
                                  **self._agents.live_metrics(agent_id)})

    def on_get_history(self, req: falcon.Request, resp: falcon.Response,
                       agent_id: str) -> None:
        duration = param(req, "duration", units.parse_duration) or 3600.0
        duration = min(duration, MAX_HISTORY)
        samples = self._history.since(self._agents.resolve(agent_id), duration)
        ok(resp, f"{len(samples)} sample(s)", {"agent_id": self._agents.resolve(agent_id),
                                               "duration": duration, "samples": samples})


class PrometheusResource:
    """GET /metrics: the control plane in the Prometheus text format."""

    def __init__(self, collector: ControlPlaneCollector) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(collector)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(self._registry)
