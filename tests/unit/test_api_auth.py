"""The auth middleware: the admin token grants every route, an agent's manage token its
agent's management routes, its invoke token none (the proxy checks that one)."""

import falcon
import falcon.testing
import pytest

from agentainer.agents.spec import AgentSpec
from agentainer.api import http_errors as errors
from agentainer.api.auth import AuthMiddleware
from agentainer.errors import AgentNotFound
from agentainer.tokens import hash_token

ADMIN = "admin-token-0123456789"
INVOKE = "invoke-token-0123456789"
MANAGE = "manage-token-0123456789"
LEGACY = "legacy-token-0123456789"
OTHER_MANAGE = "other-manage-token-0123"
AGENT, OTHER, OLD = "agent-aaaaaaaaaaaa", "agent-bbbbbbbbbbbb", "agent-cccccccccccc"


class FakeStore:
    """Three agents: one with both new tokens, one with a manage token, one stored before
    the scopes were split (its one token_hash)."""

    def __init__(self) -> None:
        self.specs = {
            AGENT: AgentSpec(name="web", image="x", private=True,
                             invoke_token_hash=hash_token(INVOKE),
                             manage_token_hash=hash_token(MANAGE)),
            OTHER: AgentSpec(name="other", image="x", manage_token_hash=hash_token(OTHER_MANAGE)),
            OLD: AgentSpec.from_dict({"name": "old", "image": "x", "private": True,
                                      "token_hash": hash_token(LEGACY)}),
        }
        self.reserved = {hash_token("reserved-token-012345"): "agent-dddddddddddd"}

    def token_grant(self, token_hash: str):
        for agent_id, spec in self.specs.items():
            if token_hash in spec.token_hashes:
                return agent_id, spec.scopes(token_hash)
        if token_hash in self.reserved:
            return self.reserved[token_hash], frozenset()
        return None

    def resolve(self, ref: str) -> str:
        for agent_id, spec in self.specs.items():
            if ref in (agent_id, spec.name):
                return agent_id
        raise AgentNotFound(ref)


class Ok:
    def on_get(self, req, resp, **params):
        resp.media = {"ok": True}

    on_post = on_delete = on_get


class Public(Ok):
    public = True


def sink(req, resp, **params):
    resp.media = {"proxied": True}


@pytest.fixture
def client() -> falcon.testing.TestClient:
    app = falcon.App(middleware=[AuthMiddleware(ADMIN, FakeStore())])
    errors.register(app)
    app.add_route("/health", Public())
    app.add_route("/agents", Ok())
    app.add_route("/agents/{agent_id}", Ok())
    app.add_route("/agents/{agent_id}/stop", Ok())
    app.add_route("/agents/{agent_id}/requests/{request_id}/replay", Ok())
    app.add_route("/metrics", Ok())
    app.add_sink(sink, r"^/agent/(?P<agent_ref>[^/]+)")
    return falcon.testing.TestClient(app)


def status(client, method: str, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.simulate_request(method, path, headers=headers).status_code


MANAGEMENT = [("GET", "/agents/{}"), ("DELETE", "/agents/{}"), ("POST", "/agents/{}/stop"),
              ("POST", "/agents/{}/requests/req-1/replay")]


@pytest.mark.parametrize("method, path", MANAGEMENT)
@pytest.mark.parametrize("ref", [AGENT, "web"])
def test_the_manage_token_manages_its_agent(client, method, path, ref):
    assert status(client, method, path.format(ref), MANAGE) == 200


@pytest.mark.parametrize("method, path", MANAGEMENT)
def test_the_invoke_token_manages_nothing(client, method, path):
    response = client.simulate_request(method, path.format(AGENT),
                                       headers={"Authorization": f"Bearer {INVOKE}"})
    assert response.status_code == 403
    assert response.json["error"] == "forbidden"
    assert "invoke token" in response.json["message"]


@pytest.mark.parametrize("token", [INVOKE, MANAGE, LEGACY])
@pytest.mark.parametrize("method, path", [("GET", "/agents"), ("POST", "/agents"),
                                          ("GET", "/metrics"), ("GET", f"/agents/{OTHER}"),
                                          ("POST", "/agents/other/stop"),
                                          ("GET", "/agents/never-deployed")])
def test_no_agent_token_reaches_other_routes(client, token, method, path):
    assert status(client, method, path, token) == 403


def test_a_token_stored_before_the_split_keeps_both_scopes(client):
    assert status(client, "GET", f"/agents/{OLD}", LEGACY) == 200
    assert status(client, "POST", "/agents/old/stop", LEGACY) == 200


def test_a_reserved_token_of_an_unfinished_deploy_grants_nothing(client):
    assert status(client, "GET", "/agents/agent-dddddddddddd", "reserved-token-012345") == 403


@pytest.mark.parametrize("method, path", [*MANAGEMENT, ("GET", "/agents/{}".format(OTHER)),
                                          ("POST", "/agents"), ("GET", "/metrics")])
def test_the_admin_token_does_everything(client, method, path):
    assert status(client, method, path.format(AGENT), ADMIN) == 200


@pytest.mark.parametrize("token", [None, "unknown-token-0123456789"])
def test_no_or_unknown_token_is_401(client, token):
    assert status(client, "GET", f"/agents/{AGENT}", token) == 401


def test_public_routes_and_the_proxy_are_left_alone(client):
    # NOTE: the proxy's own check is journal_scripts.ADMIT (tests/security)
    assert status(client, "GET", "/health", None) == 200
    assert status(client, "GET", f"/agent/{AGENT}/x", None) == 200
