"""The composition root: builds collaborators and registers every route in one table."""

import falcon

from agentainer import tokens
from agentainer.agents import AgentService, Networks
from agentainer.api import errors, openapi
from agentainer.api.agents import AgentResource, AgentsResource, LifecycleResource, LogsResource
from agentainer.api.auth import AuthMiddleware
from agentainer.api.system import HealthResource, OpenAPIResource
from agentainer.config import Config
from agentainer.mounts import MountPolicy
from agentainer.runtime import DockerRuntime
from agentainer.store import AgentStore

LIFECYCLE = ("start", "stop", "restart", "pause", "resume")


def create_app(config: Config, *, store: AgentStore | None = None,
               runtime: DockerRuntime | None = None,
               admin_token: str | None = None) -> falcon.App:
    """Return the WSGI app.

    Args:
        config: loaded settings.
        store, runtime: collaborators; real ones are built from ``config`` when None.
        admin_token: read from config or the data dir (generated there) when None.
    """
    store = store or AgentStore.from_url(config.redis_url, lock_timeout=config.lock_timeout)
    runtime = runtime or DockerRuntime(base_url=config.docker_host)
    if admin_token is None:
        admin_token = tokens.load_or_create(config.token, config.token_file)
    service = AgentService(
        store, runtime,
        networks=Networks(config.network, config.internal_network, config.port),
        mounts=MountPolicy(config.volume_roots, config.data_dir),
        default_app_port=config.default_app_port, stop_timeout=config.stop_timeout)
    app = falcon.App(middleware=[AuthMiddleware(admin_token, store)])
    app.req_options.strip_url_path_trailing_slash = True
    errors.register(app)
    routes: list[tuple[str, object]] = [
        ("/health", HealthResource(store, runtime)),
        ("/openapi.json", OpenAPIResource(openapi.document())),
        ("/agents", AgentsResource(service)),
        ("/agents/{agent_id}", AgentResource(service)),
        *[(f"/agents/{{agent_id}}/{op}", LifecycleResource(service, op)) for op in LIFECYCLE],
        ("/agents/{agent_id}/logs", LogsResource(service)),
    ]
    for path, resource in routes:
        app.add_route(path, resource)
    return app
