"""Agents reach each other only through the proxy, never the management API (make test-network)."""

import json

import docker
import pytest

from tests.stack import Api, Stack
from tests.integration.journal_helpers import started


def inside(docker_client: docker.DockerClient, agent: dict, command: str) -> tuple[int, str]:
    """Run a shell command inside the agent's container (busybox sh and wget)."""
    container = docker_client.containers.get(f"agentainer-{agent['id']}")
    code, output = container.exec_run(["sh", "-c", command])
    return code, output.decode()


@pytest.fixture
def pair(api: Api, name: str) -> tuple[dict, dict]:
    return started(api, name + "-a"), started(api, name + "-b")


def test_an_agent_calls_another_through_the_proxy(pair, docker_client, api: Api):
    caller, callee = pair
    code, output = inside(docker_client, caller,
                          f'wget -qO- "$AGENTAINER_PROXY_URL/{callee["name"]}/from-a?x=1"')
    assert code == 0, output
    echoed = json.loads(output)
    assert echoed["agent_id"] == callee["id"] and echoed["path"] == "/from-a"
    assert echoed["query"] == "x=1"
    listed = api.get(f"/agents/{callee['name']}/requests").json()["data"]["requests"]
    assert "/from-a" in [r["path"] for r in listed]  # journaled like any proxied request


@pytest.mark.parametrize("path", ["/agents", "/health", "/openapi.json",
                                  "/agents/x/requests"])
def test_the_management_api_is_not_reachable_from_an_agent(pair, docker_client, stack: Stack,
                                                           path: str):
    caller, _ = pair
    code, output = inside(docker_client, caller,
                          f'wget -S -O- --header "Authorization: Bearer {stack.token}" '
                          f'"${{AGENTAINER_PROXY_URL%/agent}}{path}" 2>&1')
    assert code != 0 and "404" in output, output


def test_agents_cannot_reach_each_other_directly_by_port_publishing(pair, docker_client):
    caller, callee = pair
    info = docker_client.api.inspect_container(f"agentainer-{callee['id']}")
    assert all(not bindings for bindings in info["NetworkSettings"]["Ports"].values())


def test_redis_is_not_reachable_from_an_agent(pair, docker_client, stack: Stack):
    caller, _ = pair
    port = stack.env["AGENTAINER_REDIS_URL"].rsplit(":", 1)[1].split("/")[0]
    code, output = inside(docker_client, caller,
                          f'gw=${{AGENTAINER_PROXY_URL#http://}}; gw=${{gw%%:*}}; '
                          f'echo PING | nc -w 2 $gw {port}; echo "exit $?"')
    assert "not found" not in output and "PONG" not in output
    assert "exit 0" not in output


def test_no_egress_agent_still_reaches_the_proxy(api: Api, name: str, docker_client,
                                                 stack: Stack):
    target = started(api, name + "-t")
    isolated = api.deploy(name + "-i", start=True, egress=False, may_call=[target["name"]])
    code, output = inside(docker_client, isolated,
                          f'sleep 1; wget -qO- "$AGENTAINER_PROXY_URL/{target["name"]}/inner"')
    assert code == 0, output
    assert json.loads(output)["path"] == "/inner"
    networks = docker_client.api.inspect_container(
        f"agentainer-{isolated['id']}")["NetworkSettings"]["Networks"]
    assert list(networks) == [stack.internal_network]
