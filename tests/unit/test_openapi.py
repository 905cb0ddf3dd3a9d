"""The OpenAPI document describes every registered route and method, and nothing more."""

import falcon.inspect

from agentainer import config, wiring
from agentainer.api.app import create_app
from agentainer.api.openapi import PATHS, document


def registered_routes() -> set[tuple[str, str]]:
    # NOTE: nothing connects at construction: redis-py and the Docker adapter are lazy; an
    # external Redis, so no embedded Redis's password file is written into ~/.agentainer
    settings = config.load(environ={"AGENTAINER_CONFIG": "/dev/null",
                                    "AGENTAINER_EMBEDDED_REDIS": "false"})
    app = create_app(settings, wiring.build(settings, kind="server"),
                     admin_token="unit-test-token")
    return {(route.path, method.method.lower())
            for route in falcon.inspect.inspect_routes(app)
            for method in route.methods if not method.internal}


def documented_routes() -> set[tuple[str, str]]:
    return {(path, method) for path, item in PATHS.items() for method in item}


def test_every_route_is_documented_and_nothing_else():
    assert registered_routes() == documented_routes()


def test_the_proxy_is_described_too():
    assert "/agent/{agent_id}/{path}" in document()["paths"]


def test_every_operation_has_a_summary_and_responses():
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            assert operation["summary"], (path, method)
            assert operation["responses"], (path, method)
