"""The REST contract: envelope, status codes, stable error codes, auth."""

import pytest
import redis
import requests

from tests.stack import ECHO_IMAGE, Api, Stack


def error_of(reply: requests.Response) -> str:
    body = reply.json()
    assert body["success"] is False and body["message"]
    return body["error"]


def test_health_is_public_and_reports_backends(stack: Stack):
    reply = requests.get(stack.url + "/health", timeout=5)
    assert reply.status_code == 200
    assert reply.json()["data"] | {"redis": "ok", "docker": "ok"} == reply.json()["data"]


def test_openapi_is_public(stack: Stack):
    reply = requests.get(stack.url + "/openapi.json", timeout=5)
    assert reply.status_code == 200 and reply.json()["openapi"].startswith("3.")


def test_list_envelope(api: Api, name: str):
    agent = api.deploy(name)
    body = api.get("/agents").json()
    assert body["success"] is True and isinstance(body["message"], str)
    assert agent["id"] in [a["id"] for a in body["data"]]
    assert [a["name"] for a in api.get("/agents", params={"name": name}).json()["data"]] == [name]
    statuses = {a["status"] for a in api.get("/agents", params={"status": "created"}).json()["data"]}
    assert statuses == {"created"}


@pytest.mark.parametrize("body, code", [
    ("{not json", "invalid_json"),
    ('["a list"]', "invalid_input"),
    ('{"name": "x"}', "invalid_input"),
    ('{"name": "ok-name", "image": "%s", "colour": "red"}' % ECHO_IMAGE, "invalid_input"),
    ('{"name": "Bad Name", "image": "%s"}' % ECHO_IMAGE, "invalid_input"),
    ('{"name": "-dash", "image": "%s"}' % ECHO_IMAGE, "invalid_input"),
    ('{"name": "%s", "image": "%s"}' % ("x" * 64, ECHO_IMAGE), "invalid_input"),
    ('{"name": "ok-name", "image": "%s", "cpu_limit": "lots"}' % ECHO_IMAGE, "invalid_input"),
    ('{"name": "ok-name", "image": "%s", "memory_limit": "1k"}' % ECHO_IMAGE, "invalid_input"),
    ('{"name": "ok-name", "image": "%s", "memory_limit": -5}' % ECHO_IMAGE, "invalid_input"),
    ('{"name": "ok-name", "image": "%s", "auto_restart": "yes"}' % ECHO_IMAGE, "invalid_input"),
    ('{"name": "ok-name", "image": "%s", "volumes": [{"host_path": "rel", '
     '"container_path": "/x"}]}' % ECHO_IMAGE, "invalid_input"),
])
def test_bad_deploy_bodies_are_400(api: Api, body: str, code: str):
    reply = api.post("/agents", data=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert error_of(reply) == code
    assert api.get("/agents/ok-name").status_code == 404


def test_unknown_field_is_named(api: Api, name: str):
    reply = api.post("/agents", json={"name": name, "image": ECHO_IMAGE, "colour": "red"})
    assert "colour" in reply.json()["message"]


def test_too_many_cpus_is_a_clear_error(api: Api, name: str):
    reply = api.post("/agents", json={"name": name, "image": ECHO_IMAGE, "cpu_limit": 512})
    # NOTE: 409: a valid request the host cannot give (Docker refuses it), not a bad one
    assert (reply.status_code, reply.json()["error"]) == (409, "docker_refused")
    assert "cpu" in reply.json()["message"].lower()
    assert api.get(f"/agents/{name}").status_code == 404


# NOTE: a loopback port that refuses connections: the test never leaves this machine.
UNREACHABLE_IMAGE = "127.0.0.1:1/nope:latest"


def test_unreachable_registry_is_503_and_leaves_nothing(api: Api, name: str, docker_client):
    reply = api.post("/agents", json={"name": name, "image": UNREACHABLE_IMAGE, "pull": True})
    assert reply.status_code == 503, reply.text
    assert error_of(reply) == "image_pull_failed"
    assert UNREACHABLE_IMAGE in reply.json()["message"]
    assert "connection refused" in reply.json()["message"]
    assert api.get(f"/agents/{name}").status_code == 404
    assert not docker_client.containers.list(all=True, filters={"label": f"agentainer.name={name}"})
    api.deploy(name)  # the name was never taken


def test_without_pull_a_missing_image_is_not_pulled(api: Api, name: str):
    reply = api.post("/agents", json={"name": name, "image": UNREACHABLE_IMAGE})
    assert reply.status_code == 404 and error_of(reply) == "image_not_found"


def test_taken_name_is_409(api: Api, name: str):
    api.deploy(name)
    reply = api.post("/agents", json={"name": name, "image": ECHO_IMAGE})
    assert reply.status_code == 409
    assert error_of(reply) == "name_taken"


def test_unknown_agent_by_id_and_name_is_404(api: Api):
    for ref in ("agent-0123456789ab", "never-deployed"):
        reply = api.get(f"/agents/{ref}")
        assert reply.status_code == 404
        assert error_of(reply) == "agent_not_found"


def test_unknown_route_and_method(api: Api):
    assert error_of(api.get("/nope")) == "route_not_found"
    reply = api.request("PUT", "/agents")
    assert reply.status_code == 405
    assert error_of(reply) == "method_not_allowed"


def test_bad_query_parameter_is_400(api: Api):
    assert error_of(api.get("/agents", params={"status": "dancing"})) == "invalid_input"


class TestAuth:
    def test_no_token_is_401(self, stack: Stack):
        reply = requests.get(stack.url + "/agents", timeout=5)
        assert reply.status_code == 401
        assert reply.headers["WWW-Authenticate"] == "Bearer"
        assert error_of(reply) == "unauthorized"

    def test_wrong_token_is_401(self, stack: Stack):
        assert Api(stack.url, "wrong-token-1234567").get("/agents").status_code == 401

    def test_token_in_query_string_is_not_accepted(self, stack: Stack):
        reply = requests.get(stack.url + "/agents", params={"token": stack.token}, timeout=5)
        assert reply.status_code == 401

    def test_agent_token_is_scoped_to_its_agent(self, api: Api, stack: Stack, name: str):
        token = "scoped-token-" + name
        mine = api.deploy(name, manage_token=token)
        other = api.deploy(name + "-other")
        scoped = Api(stack.url, token)
        assert scoped.get(f"/agents/{mine['id']}").status_code == 200
        assert scoped.get(f"/agents/{name}").status_code == 200
        assert scoped.post(f"/agents/{name}/start").status_code == 200
        assert scoped.get(f"/agents/{other['id']}").status_code == 403
        assert scoped.get("/agents/never-deployed").status_code == 403
        assert scoped.get("/agents").status_code == 403
        reply = scoped.post("/agents", json={"name": name + "-x", "image": ECHO_IMAGE})
        assert reply.status_code == 403 and error_of(reply) == "forbidden"

    def test_tokens_are_never_returned(self, api: Api, name: str, redis_url: str):
        token = "secret-token-" + name
        agent = api.deploy(name, token=token, private=True, manage_token=token + "-manage")
        assert token not in api.get(f"/agents/{name}").text
        assert agent["has_token"] is True and "token" not in agent
        assert agent["has_manage_token"] is True and "manage_token" not in agent
        stored = redis.Redis.from_url(redis_url).hgetall(f"agentainer:agent:{agent['id']}")
        assert token.encode() not in b"".join(stored.values())

    def test_token_file_is_private(self, stack: Stack):
        assert (stack.data_dir / "admin.token").stat().st_mode & 0o777 == 0o600

    def test_admin_token_never_logged(self, stack: Stack):
        assert stack.token not in (stack.data_dir / "server.log").read_text()
