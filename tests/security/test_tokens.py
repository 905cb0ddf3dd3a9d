"""An agent's invoke token calls it through the proxy and manages nothing; its manage token
manages it and calls nothing private; neither reaches another agent or the control plane.

The management routes are enumerated from the OpenAPI table, which tests/unit/test_openapi.py
holds equal to the registered routes, so a new route is covered here without an edit.
"""

import json
from collections.abc import Iterator

import pytest
import redis

from agentainer.api.openapi import PATHS
from agentainer.tokens import hash_token
from tests.helpers import wait_for
from tests.stack import ECHO_IMAGE, Api, Stack, run_cli

MANAGEMENT = sorted((path, method) for path, item in PATHS.items() if "{agent_id}" in path
                    for method in item)
NON_REMOVING = [(path, method) for path, method in MANAGEMENT
                if (path, method) != ("/agents/{agent_id}", "delete")]
CONTROL_PLANE = [(path, method) for path, item in PATHS.items() if "{agent_id}" not in path
                 for method in item if not item[method].get("security") == []]


class Deployed:
    """A private, persisted agent with both tokens, and one journaled request of it."""

    def __init__(self, api: Api, stack: Stack, name: str) -> None:
        self.invoke, self.manage = f"invoke-{name}", f"manage-{name}"
        agent = api.deploy(name, token=self.invoke, manage_token=self.manage, private=True,
                           start=True)
        self.id, self.name = agent["id"], name
        wait_for(lambda: api.status(self.id) == "running", timeout=60,
                 message=f"{name} to run")
        replies = []
        wait_for(lambda: replies.append(call(stack, self.id, self.invoke)) or
                 replies[-1].status_code == 200, timeout=30, message=f"{name} to answer")
        self.request_id = replies[-1].headers["X-Agentainer-Request-Id"]


def call(stack: Stack, ref: str, token: str | None, path: str = "/x"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Api(stack.url, None).post(f"/agent/{ref}{path}", data=b"hi", headers=headers,
                                     timeout=30)


def route(path: str, agent: Deployed, ref: str | None = None) -> str:
    return path.format(agent_id=ref or agent.id, request_id=agent.request_id)


def send(api: Api, method: str, path: str):
    kwargs = {"json": {}} if method == "post" else {}
    if path.endswith("/logs"):
        kwargs["params"] = {"tail": "1"}
    return api.request(method.upper(), path, **kwargs)


def deployed(stack: Stack, suffix: str) -> Iterator[Deployed]:
    api = Api(stack.url, stack.token)
    agent = Deployed(api, stack, f"{stack.prefix}-{suffix}")
    yield agent
    api.delete(f"/agents/{agent.id}")


@pytest.fixture(scope="module")
def agent(stack: Stack) -> Iterator[Deployed]:
    yield from deployed(stack, "scoped")


@pytest.fixture(scope="module")
def other(stack: Stack) -> Iterator[Deployed]:
    yield from deployed(stack, "other")


def test_the_route_table_is_enumerated():
    assert ("/agents/{agent_id}", "delete") in MANAGEMENT
    assert ("/agents/{agent_id}/requests/{request_id}/replay", "post") in MANAGEMENT
    assert ("/agents", "post") in CONTROL_PLANE and ("/metrics", "get") in CONTROL_PLANE


@pytest.mark.parametrize("path, method", MANAGEMENT)
@pytest.mark.parametrize("by", ["id", "name"])
def test_the_invoke_token_is_403_on_every_management_route(stack, agent, path, method, by):
    ref = agent.id if by == "id" else agent.name
    reply = send(Api(stack.url, agent.invoke), method, route(path, agent, ref))
    assert reply.status_code == 403, (method, path, reply.text)
    assert reply.json()["error"] == "forbidden"


def test_the_invoke_token_calls_its_agent_and_never_reaches_it(stack, agent):
    reply = call(stack, agent.name, agent.invoke, "/hello")
    assert reply.status_code == 200, reply.text
    headers = {k.lower(): v for k, v in reply.json()["headers"]}
    assert "authorization" not in headers  # APPSEC: stripped like every Agentainer token


def test_the_manage_token_manages_its_agent(stack, agent):
    manager = Api(stack.url, agent.manage)
    for path, method in NON_REMOVING:
        reply = send(manager, method, route(path, agent))
        assert reply.status_code not in (401, 403), (method, path, reply.text)
    wait_for(lambda: manager.post(f"/agents/{agent.id}/start", json={}).status_code in
             (200, 409), timeout=60, message="the agent to start again")
    record = manager.get(f"/agents/{agent.id}/requests/{agent.request_id}")
    assert record.status_code == 200, record.text  # NOTE: a caller's journaled request


def test_the_manage_token_removes_its_agent(stack, api, name):
    agent = Deployed(api, stack, name)
    reply = Api(stack.url, agent.manage).delete(f"/agents/{agent.id}")
    assert reply.status_code == 200, reply.text
    assert api.get(f"/agents/{agent.id}").status_code == 404


def test_the_manage_token_does_not_call_a_private_agent(stack, agent):
    assert call(stack, agent.id, agent.manage).status_code == 401
    assert call(stack, agent.name, agent.manage).status_code == 401


@pytest.mark.parametrize("path, method", MANAGEMENT)
def test_no_token_of_one_agent_reaches_another(stack, agent, other, path, method):
    for token in (agent.invoke, agent.manage):
        reply = send(Api(stack.url, token), method, route(path, other))
        assert reply.status_code == 403, (method, path, reply.text)
    assert call(stack, other.id, agent.invoke).status_code == 401


@pytest.mark.parametrize("path, method", CONTROL_PLANE)
def test_neither_token_reaches_the_control_plane(stack, agent, path, method):
    for token in (agent.invoke, agent.manage):
        reply = send(Api(stack.url, token), method, path)
        assert reply.status_code == 403, (method, path, reply.text)


def test_the_admin_token_still_manages_everything(stack, api, agent):
    for path, method in NON_REMOVING:
        if method == "get":
            assert send(api, method, route(path, agent)).status_code == 200, path


def test_each_token_is_unique_across_both_scopes(stack, api, agent, name):
    for fields in ({"token": agent.manage, "private": True}, {"manage_token": agent.invoke},
                   {"manage_token": agent.manage}):
        reply = api.post("/agents", json={"name": name, "image": ECHO_IMAGE,
                                          **fields})
        assert reply.status_code == 409 and reply.json()["error"] == "token_in_use", reply.text
    assert api.get(f"/agents/{name}").status_code == 404  # NOTE: the name was released


def test_tokens_are_stored_only_as_hashes(stack, agent, redis_url):
    client = redis.Redis.from_url(redis_url)
    stored = b"".join(client.hgetall(f"agentainer:agent:{agent.id}").values())
    for token in (agent.invoke, agent.manage):
        assert token.encode() not in stored
        assert client.hget("agentainer:tokens", hash_token(token)) == agent.id.encode()
    assert client.hget(f"agentainer:agent:{agent.id}", "private_hash") == \
        hash_token(agent.invoke).encode()


def test_a_token_stored_before_the_split_keeps_both_scopes(stack, api, name, redis_url):
    # NOTE: a record as the previous release wrote it: one token_hash, in spec and tokens
    legacy = f"legacy-{name}"
    agent = api.deploy(name, start=True)
    client = redis.Redis.from_url(redis_url)
    key = f"agentainer:agent:{agent['id']}"
    spec = json.loads(client.hget(key, "spec"))
    for field in ("invoke_token_hash", "manage_token_hash"):
        spec.pop(field)
    spec.update(token_hash=hash_token(legacy), private=True)
    client.hset(key, mapping={"spec": json.dumps(spec), "private_hash": hash_token(legacy)})
    client.hset("agentainer:tokens", hash_token(legacy), agent["id"])
    old = Api(stack.url, legacy)
    assert old.get(f"/agents/{name}").status_code == 200
    assert call(stack, name, legacy).status_code in (200, 202)  # NOTE: admitted
    assert old.get("/agents").status_code == 403
    assert old.delete(f"/agents/{name}").status_code == 200
    assert client.hget("agentainer:tokens", hash_token(legacy)) is None


def test_the_cli_deploys_with_both_tokens(stack, name):
    invoke, manage = f"invoke-{name}", f"manage-{name}"
    result = run_cli(stack, "deploy", "-n", name, "-i", ECHO_IMAGE, "--private",
                     "--token", invoke, "--manage-token", manage, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["has_manage_token"] is True
    assert run_cli(stack, "inspect", name, token=invoke).returncode != 0
    inspected = run_cli(stack, "inspect", name, "--json", token=manage)
    assert inspected.returncode == 0, inspected.stderr
    assert run_cli(stack, "list", token=manage).returncode != 0
    assert run_cli(stack, "remove", name, token=manage).returncode == 0


def test_a_manage_token_sent_to_a_public_agent_never_reaches_it(stack, api, name):
    manage = f"manage-{name}"
    agent = api.deploy(name, manage_token=manage, start=True)
    wait_for(lambda: api.status(agent["id"]) == "running", timeout=60, message="running")
    replies = []
    wait_for(lambda: replies.append(call(stack, name, manage)) or
             replies[-1].status_code == 200, timeout=30, message=f"{name} to answer")
    headers = {k.lower(): v for k, v in replies[-1].json()["headers"]}
    assert "authorization" not in headers  # APPSEC: ADMIT finds it in the tokens hash
    api.delete(f"/agents/{agent['id']}")
