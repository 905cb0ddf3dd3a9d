"""Browsers and hosts: DNS rebinding, agents' own origins, and who may use the gateways.

Each test is one attack: a browser page under a foreign name or on an agent's origin
(replayed with the ``Host`` header it would send), a ``--no-egress`` agent calling out
through another agent, and strangers reaching a gateway listener.
"""

import json
import secrets
import textwrap

import docker
import pytest
import requests

from tests.integration.journal_helpers import started
from tests.stack import ECHO_IMAGE, Api, Stack, run_cli

# Run inside a container: GET the URL, print the status and the body.
FETCH = textwrap.dedent("""
    import sys, urllib.request, urllib.error
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=10) as reply:
            print(reply.status, reply.read().decode())
    except urllib.error.HTTPError as ex:
        print(ex.code, ex.read().decode())
    except OSError as ex:
        print("unreachable", ex)
""")


def as_host(stack: Stack, host: str, path: str, **kwargs) -> requests.Response:
    """Send what a browser on ``http://<host>:<port>`` sends, to the loopback server."""
    return requests.get(stack.url + path, headers={"Host": host, **kwargs.pop("headers", {})},
                        timeout=30, **kwargs)


def port(stack: Stack) -> str:
    return stack.url.rsplit(":", 1)[1]


def gateway(docker_client: docker.DockerClient, network: str) -> str:
    return docker_client.api.inspect_network(network)["IPAM"]["Config"][0]["Gateway"]


def fetch_inside(docker_client: docker.DockerClient, agent: dict, url: str) -> tuple[int, str]:
    """GET from inside the agent's container; return the status and the body."""
    code, output = docker_client.containers.get(f"agentainer-{agent['id']}").exec_run(
        ["python3", "-c", FETCH, url])
    status, _, body = output.decode().strip().partition(" ")
    assert code == 0 and status.isdigit(), output
    return int(status), body


def journaled_paths(api: Api, ref: str) -> list[str]:
    return [r["path"] for r in api.get(f"/agents/{ref}/requests").json()["data"]["requests"]]


def test_dns_rebinding_host_is_refused_on_management_api(stack: Stack, api: Api, name: str):
    started(api, name)
    bearer = {"Authorization": f"Bearer {stack.token}"}
    for host in ("evil.example", f"evil.example:{port(stack)}", "localhost.evil.example"):
        for path in ("/agents", "/health", f"/agent/{name}/secret"):
            reply = as_host(stack, host, path, headers=bearer)
            assert reply.status_code == 421, (host, path, reply.text)
            assert reply.json()["error"] == "host_not_allowed"
    for host in (f"127.0.0.1:{port(stack)}", f"localhost:{port(stack)}", "[::1]"):
        assert as_host(stack, host, "/agents", headers=bearer).status_code == 200, host
    assert as_host(stack, "127.0.0.1", f"/agent/{name}/x").json()["agent_id"]  # path routing


def test_agent_origin_routes_to_the_agent(stack: Stack, api: Api, name: str):
    agent = started(api, name)
    for ref in (name, agent["id"]):
        reply = as_host(stack, f"{ref}.localhost:{port(stack)}", "/", params={"q": "1"})
        assert reply.status_code == 200, reply.text
        echoed = reply.json()
        assert (echoed["agent_id"], echoed["path"], echoed["query"]) == (agent["id"], "/", "q=1")
        assert [f"{ref}.localhost"] == [v for k, v in echoed["headers"]
                                        if k.lower() == "x-forwarded-host"]
    listed = api.get(f"/agents/{name}/requests").json()["data"]["requests"]
    assert listed[0]["path"] == "/" and listed[0]["query"] == "q=1"  # journaled


def test_agent_origin_cannot_reach_management_api(stack: Stack, api: Api, name: str):
    agent = started(api, name)
    bearer = {"Authorization": f"Bearer {stack.token}"}
    for path in ("/agents", "/health", "/metrics", f"/agents/{name}/requests"):
        reply = as_host(stack, f"{name}.localhost:{port(stack)}", path, headers=bearer)
        echoed = reply.json()  # NOTE: the agent's answer, not the API's envelope
        assert echoed.get("agent_id") == agent["id"] and "success" not in echoed, reply.text
        assert echoed.get("path", "/health") == path
    reply = as_host(stack, f"{name}-nosuch.localhost", "/agents", headers=bearer)
    assert reply.status_code == 404 and reply.json()["error"] == "agent_not_found"


def test_agent_origin_cannot_reach_another_agent(stack: Stack, api: Api, name: str):
    agent, other = started(api, name + "-a"), started(api, name + "-b")
    for path in (f"/agent/{name}-b/x", f"/agent/{other['id']}/x"):
        reply = as_host(stack, f"{name}-a.localhost", path)
        echoed = reply.json()
        assert (echoed.get("agent_id"), echoed.get("path")) == (agent["id"], path), reply.text
    assert "/x" not in journaled_paths(api, name + "-b")


def test_no_egress_agent_calls_only_allowed_agents(stack: Stack, api: Api, name: str,
                                                   docker_client):
    allowed, forbidden = started(api, name + "-ok"), started(api, name + "-no")
    deployed = run_cli(stack, "deploy", "--name", name + "-i", "--image", ECHO_IMAGE,
                       "--no-egress", "--may-call", f"{name}-ok", "--start", "--json")
    assert deployed.returncode == 0, deployed.stderr
    isolated = json.loads(deployed.stdout)
    assert isolated["may_call"] == [f"{name}-ok"]
    assert run_cli(stack, "inspect", isolated["id"]).stdout.count(f'["{name}-ok"]') == 1
    proxy = f"http://{gateway(docker_client, stack.internal_network)}:{port(stack)}/agent"
    status, body = fetch_inside(docker_client, isolated, f"{proxy}/{name}-ok/inner")
    assert status == 200 and json.loads(body)["agent_id"] == allowed["id"], body
    for target in (f"{name}-no", forbidden["id"], f"{name}-nosuch"):
        status, body = fetch_inside(docker_client, isolated, f"{proxy}/{target}/x")
        assert (status, json.loads(body)["error"]) == (403, "call_not_allowed"), body
    assert "/x" not in journaled_paths(api, name + "-no")
    default = api.deploy(name + "-d", start=True, egress=False)
    assert default["may_call"] == []  # --no-egress: none unless named
    status, body = fetch_inside(docker_client, default, f"{proxy}/{name}-ok/x")
    assert (status, json.loads(body)["error"]) == (403, "call_not_allowed"), body


@pytest.fixture
def outsider(docker_client: docker.DockerClient, stack: Stack):
    """Run the fetch script in a container on Docker's default bridge: not an agent."""
    created = []

    def run(url: str) -> str:
        container = docker_client.containers.run(
            ECHO_IMAGE, entrypoint=["python3", "-c", FETCH, url], network="bridge",
            name=f"{stack.prefix}-outsider-{secrets.token_hex(3)}", detach=True)
        created.append(container)
        container.wait(timeout=60)
        return container.logs().decode().strip()

    yield run
    for container in created:
        container.remove(force=True)


def test_container_outside_agentainer_cannot_reach_gateway(stack: Stack, api: Api, name: str,
                                                          docker_client, outsider):
    started(api, name)
    for network in (stack.network, stack.internal_network):
        url = f"http://{gateway(docker_client, network)}:{port(stack)}/agent/{name}/x"
        output = outsider(url)
        # NOTE: the host routes a container's packets to any of its addresses: the
        # listener is reachable, so it is the caller check that refuses
        assert output.startswith("403 "), output
        assert json.loads(output[4:])["error"] == "not_an_agent"
        reply = requests.get(url, timeout=10)  # a host process (source: the gateway itself)
        assert reply.status_code == 403 and reply.json()["error"] == "not_an_agent"
    assert "/x" not in journaled_paths(api, name)
