"""The WSGI app: every route, in one table, over collaborators built by wiring.py."""

import json
import threading
from collections.abc import Callable, Iterable

import falcon

from agentainer.api import http_errors as errors, openapi
from agentainer.api.auth import AuthMiddleware
from agentainer.api.lifecycle import AgentResource, AgentsResource, LifecycleResource
from agentainer.api.logs import FollowSlots, LogsResource
from agentainer.statuses import OPERATIONS
from agentainer.api.observability import (
    AgentHealthResource, AgentMetricsResource, PrometheusResource,
)
from agentainer.api.envelope import failure
from agentainer.api.proxy import (
    PATTERN, REQUEST_ID_HEADER, RETRY_AFTER, ProxySink, Releasing,
)
from agentainer.api.inflight import InflightLimit, Slots
from agentainer.api.requests import ReplayResource, RequestResource, RequestsResource
from agentainer.api.responses import ResponseResource
from agentainer.api.system import HealthResource, OpenAPIResource
from agentainer.api.webhooks import WebhooksResource
from agentainer.config import Config
from agentainer.journal.journal import new_request_id
from agentainer.journal.redaction import Redactor
from agentainer.monitor.metrics import ControlPlaneCollector
from agentainer.wiring import Components

def create_app(config: Config, components: Components, *, admin_token: str) -> falcon.App:
    """Return the WSGI app: the management API and the proxy, routed to ``components``.

    It builds no collaborator (wiring.py does), only the HTTP layer over them: the
    resources, the proxy sink, the auth middleware and the error table.

    Args:
        config: loaded settings (the HTTP limits, redaction lists, in-flight cap).
        components: this server's collaborators (``wiring.build(config, kind="server")``).
        admin_token: the admin token (``tokens.load_or_create``).
    """
    c = components
    app = falcon.App(middleware=[AuthMiddleware(admin_token, c.store)])
    metrics = AgentMetricsResource(c.agents, c.history)
    redactor = Redactor(config.redact_headers, config.redact_params)
    follows = FollowSlots(config.follow_limit)
    errors.register(app)
    routes: list[tuple[str, object]] = [
        ("/health", HealthResource({"redis": c.store.ping, "docker": c.runtime.ping})),
        ("/openapi.json", OpenAPIResource(openapi.document())),
        ("/agents", AgentsResource(c.agents)),
        ("/agents/{agent_id}", AgentResource(c.agents)),
        *[(f"/agents/{{agent_id}}/{op}", LifecycleResource(c.agents, op)) for op in OPERATIONS],
        ("/agents/{agent_id}/logs", LogsResource(c.agents, follows)),
        ("/agents/{agent_id}/health", AgentHealthResource(c.agents, c.health)),
        ("/agents/{agent_id}/metrics", metrics),
        ("/metrics", PrometheusResource(
            ControlPlaneCollector(c.store, c.journal.queue_length, c.journal.stored_bytes))),
        ("/agents/{agent_id}/requests", RequestsResource(c.agents, c.journal, redactor)),
        ("/agents/{agent_id}/requests/{request_id}",
         RequestResource(c.agents, c.journal, redactor)),
        ("/agents/{agent_id}/requests/{request_id}/replay",
         ReplayResource(c.agents, c.journal, c.scheduler)),
        ("/agents/{agent_id}/requests/{request_id}/response",
         ResponseResource(c.agents, c.journal, c.follower, admin_token=admin_token,
                          follows=follows)),
        ("/agents/{agent_id}/webhooks", WebhooksResource(c.agents, c.webhooks)),
    ]
    for path, resource in routes:
        app.add_route(path, resource)
    app.add_route("/agents/{agent_id}/metrics/history", metrics, suffix="history")
    app.add_sink(ProxySink(c.journal, c.completions, c.upstream, schedule=c.scheduler.schedule,
                           on_down=c.agents.reconcile, wake=c.agents.wake,
                           admin_token=admin_token,
                           max_body=config.max_body,
                           capture_limit=config.capture_limit,
                           inflight=InflightLimit(config.agent_max_inflight),
                           follower=c.follower, hold=config.hold,
                           holds=Slots(config.hold_limit)),
                 PATTERN)
    return app


WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


class ProxyCap:
    """Answers ``503 proxy_busy`` to ``/agent/...`` requests beyond ``limit`` at a time.

    Every proxied request (an open stream included) holds one of waitress's worker
    threads until its response ends; capping them below the pool's size keeps threads
    free for the management API, which long streams would otherwise starve.
    """

    def __init__(self, app: WSGIApp, limit: int) -> None:
        self._app = app
        self._slots = threading.BoundedSemaphore(limit)
        self._busy = json.dumps(failure(
            f"the proxy is serving {limit} requests, its limit per server process "
            "(threads - api_threads); retry later", "proxy_busy")).encode()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if not environ.get("PATH_INFO", "").startswith("/agent/"):
            return self._app(environ, start_response)
        if not self._slots.acquire(blocking=False):
            start_response("503 Service Unavailable", [
                ("Content-Type", "application/json"), ("Retry-After", RETRY_AFTER),
                (REQUEST_ID_HEADER, new_request_id())])
            return [self._busy]
        try:
            return Releasing(self._app(environ, start_response), self._slots.release)
        except BaseException:
            self._slots.release()
            raise
