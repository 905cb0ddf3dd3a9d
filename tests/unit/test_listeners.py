"""The listeners' wrappers: Host routing on the main one, callers on the gateways."""

import json
from types import SimpleNamespace

import pytest

from agentainer.api.hosts import HostPolicy
from agentainer.api.listeners import Gateway, HostRouting
from agentainer.api.proxy import CALLER_ENV
from agentainer.errors import CallNotAllowed, NotAnAgent

POLICY = HostPolicy.from_settings("127.0.0.1", ())


def seen(environ: dict, start_response) -> list[bytes]:
    start_response("200 OK", [])
    return [json.dumps({k: environ.get(k) for k in ("PATH_INFO", "REQUEST_URI")}).encode()]


def call(app, **environ) -> tuple[str, dict]:
    replies = []
    body = b"".join(app(environ, lambda status, headers: replies.append(status)))
    return replies[0], json.loads(body)


@pytest.mark.parametrize("path, uri, routed_path, routed_uri", [
    ("/", "/", "/agent/web/", "/agent/web/"),
    ("/x y", "/x%20y?q=1", "/agent/web/x y", "/agent/web/x%20y?q=1"),
    ("/agents", "/agents", "/agent/web/agents", "/agent/web/agents"),
    ("/agent/other/x", "/agent/other/x", "/agent/web/agent/other/x", "/agent/web/agent/other/x"),
    ("/x", "http://web.localhost:8081/x", "/agent/web/x", "/agent/web/x"),
])
def test_an_agent_origin_routes_every_path_to_its_agent(path, uri, routed_path, routed_uri):
    status, environ = call(HostRouting(seen, POLICY), HTTP_HOST="web.localhost:8081",
                           PATH_INFO=path, REQUEST_URI=uri)
    assert status == "200 OK"
    assert environ == {"PATH_INFO": routed_path, "REQUEST_URI": routed_uri}


def test_the_api_hosts_pass_unchanged():
    _, environ = call(HostRouting(seen, POLICY), HTTP_HOST="127.0.0.1:8081",
                      PATH_INFO="/agents", REQUEST_URI="/agents")
    assert environ == {"PATH_INFO": "/agents", "REQUEST_URI": "/agents"}


def test_a_foreign_host_gets_421_before_the_app():
    status, body = call(HostRouting(lambda *a: pytest.fail("reached the app"), POLICY),
                        HTTP_HOST="evil.example:8081", PATH_INFO="/agents")
    assert status == "421 Misdirected Request"
    assert body["error"] == "host_not_allowed" and body["success"] is False


CALLER = SimpleNamespace(id="agent-0000000000c1", name="caller")


class FakeCallers:
    def identify(self, address: str) -> SimpleNamespace:
        if address != "10.0.0.2":
            raise NotAnAgent(address)
        return CALLER

    def check(self, caller: SimpleNamespace, target: str) -> None:
        if target != "b":
            raise CallNotAllowed(caller.name, target)


@pytest.mark.parametrize("address, path, status, code", [
    ("10.0.0.2", "/agent/b/x", "200 OK", None),
    ("10.0.0.2", "/agent/c/x", "403 Forbidden", "call_not_allowed"),
    ("10.0.0.2", "/agents", "404 Not Found", "route_not_found"),
    ("172.17.0.2", "/agent/b/x", "403 Forbidden", "not_an_agent"),
    ("172.17.0.2", "/agents", "403 Forbidden", "not_an_agent"),
])
def test_the_gateway_serves_agents_what_they_may_call(address, path, status, code):
    replied, body = call(Gateway(seen, FakeCallers()), REMOTE_ADDR=address, PATH_INFO=path)
    assert replied == status
    assert body.get("error") == code


def test_the_gateway_tells_the_app_which_agent_calls():
    environs = []
    app = Gateway(lambda environ, start: environs.append(environ) or seen(environ, start),
                  FakeCallers())
    call(app, REMOTE_ADDR="10.0.0.2", PATH_INFO="/agent/b/x", **{CALLER_ENV: "forged"})
    assert environs[0][CALLER_ENV] == CALLER.id
