"""Agents reach each other only through the proxy: with its token, journaled, never directly.

Each test is one attack, run from inside an agent's container against another agent.
"""

import json
import secrets
import socket
import textwrap

import docker
import pytest

from agentainer.agents.docker_runtime import ICC_OPTION, DockerRuntime
from agentainer.errors import Conflict
from tests.helpers import wait_for
from tests.conftest import RedisServer
from tests.stack import ECHO_IMAGE, Api, Stack, _clean_docker, make_stack
from tests.integration.journal_helpers import started

APP_PORT = 8000  # the echo agent's

# Resolve, then connect; print what happened (the exit status says which).
CONNECT = textwrap.dedent("""
    import socket, sys
    host, port = sys.argv[1], int(sys.argv[2])
    print("resolved", socket.gethostbyname(host))
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as ex:
        print("blocked", type(ex).__name__, ex)
        sys.exit(3)
    print("connected")
""")


def container(docker_client: docker.DockerClient, agent: dict):
    return docker_client.containers.get(f"agentainer-{agent['id']}")


def connect_from(docker_client: docker.DockerClient, agent: dict, host: str,
                 port: int = APP_PORT) -> tuple[int, str]:
    """Open a TCP connection from inside the agent's container; return (exit status, output)."""
    code, output = container(docker_client, agent).exec_run(
        ["python3", "-c", CONNECT, host, str(port)])
    return code, output.decode()


def address(docker_client: docker.DockerClient, agent: dict, network: str) -> str:
    return container(docker_client, agent).attrs["NetworkSettings"]["Networks"][network][
        "IPAddress"]


def assert_listening(ip: str) -> None:
    """The host reaches the app (as the proxy does): a refusal below is the network's doing."""
    socket.create_connection((ip, APP_PORT), timeout=2).close()


def private_agent(api: Api, name: str, **fields) -> tuple[dict, str]:
    token = "private-token-" + secrets.token_hex(8)
    agent = api.deploy(name, start=True, private=True, token=token, **fields)
    wait_for(lambda: api.session.get(f"{api.url}/agent/{name}/health", timeout=5,
                                     headers={"Authorization": f"Bearer {token}"}
                                     ).status_code == 200, timeout=30, message=f"{name}")
    return agent, token


@pytest.fixture
def pair(api: Api, name: str) -> tuple[dict, dict, str]:
    """An agent (the attacker) and a private agent (the target) with its token."""
    target, token = private_agent(api, name + "-t")
    return started(api, name + "-a"), target, token


def assert_blocked(docker_client, attacker: dict, host: str, target_ip: str) -> None:
    code, output = connect_from(docker_client, attacker, host)
    assert f"resolved {target_ip}" in output, output  # the name does lead to the target
    assert code == 3 and "blocked" in output, output


def test_an_agent_cannot_connect_to_another_agent_by_ip(pair, docker_client, stack: Stack):
    attacker, target, _ = pair
    ip = address(docker_client, target, stack.network)
    assert_listening(ip)
    assert_blocked(docker_client, attacker, ip, ip)


def test_an_agent_cannot_connect_to_another_agent_by_its_name_alias(pair, docker_client,
                                                                    stack: Stack):
    attacker, target, _ = pair
    ip = address(docker_client, target, stack.network)
    assert_listening(ip)
    assert_blocked(docker_client, attacker, target["name"], ip)


def test_an_agent_cannot_connect_to_another_agent_by_its_id_alias(pair, docker_client,
                                                                  stack: Stack):
    attacker, target, _ = pair
    ip = address(docker_client, target, stack.network)
    assert_blocked(docker_client, attacker, target["id"], ip)
    assert_blocked(docker_client, attacker, f"agentainer-{target['id']}", ip)  # container name


def test_a_no_egress_agent_cannot_connect_to_another_no_egress_agent(api: Api, name: str,
                                                                     docker_client,
                                                                     stack: Stack):
    attacker = api.deploy(name + "-a", start=True, egress=False)
    target, _ = private_agent(api, name + "-t", egress=False)
    ip = address(docker_client, target, stack.internal_network)
    assert_listening(ip)
    wait_for(lambda: container(docker_client, attacker).status == "running", message="attacker")
    assert_blocked(docker_client, attacker, target["name"], ip)
    assert_blocked(docker_client, attacker, ip, ip)


def test_an_agent_reaches_a_private_agent_only_through_the_proxy_with_its_token(
        pair, docker_client, api: Api):
    attacker, target, token = pair
    script = textwrap.dedent("""
        import os, sys, urllib.request, urllib.error
        url = os.environ["AGENTAINER_PROXY_URL"] + "/" + sys.argv[1] + "/via-proxy"
        headers = {"Authorization": "Bearer " + sys.argv[2]} if len(sys.argv) > 2 else {}
        try:
            print(urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                         timeout=10).read().decode())
        except urllib.error.HTTPError as ex:
            print("status", ex.code)
    """)
    run = container(docker_client, attacker).exec_run
    code, output = run(["python3", "-c", script, target["name"]])
    assert code == 0 and "status 401" in output.decode(), output
    code, output = run(["python3", "-c", script, target["name"], token])
    assert code == 0, output
    echoed = json.loads(output)
    assert echoed["agent_id"] == target["id"] and echoed["path"] == "/via-proxy"
    listed = api.get(f"/agents/{target['name']}/requests").json()["data"]["requests"]
    assert "/via-proxy" in [r["path"] for r in listed]  # journaled like any proxied request


# Claim the victim's address to the gateway with one ARP request (sender: the victim's
# IP at this container's MAC), the first step of completing a TCP handshake as the victim.
FORGE_ARP = textwrap.dedent("""
    import socket, struct, sys
    victim, gateway = (socket.inet_aton(a) for a in sys.argv[1:3])
    try:
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    except PermissionError as ex:
        print("refused", ex)
        sys.exit(3)
    raw.bind(("eth0", 0))
    mine = raw.getsockname()[4]
    raw.send(b"\\xff" * 6 + mine + b"\\x08\\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
             + mine + victim + b"\\x00" * 6 + gateway)
    print("sent")
""")


def host_arp(ip: str) -> str:
    """Return the MAC address the host's neighbour table holds for ``ip`` ("" if none)."""
    with open("/proc/net/arp") as table:
        return next((line.split()[3] for line in table if line.split()[0] == ip), "")


def test_an_agent_cannot_pose_as_another_agent_with_forged_arp(pair, docker_client,
                                                               stack: Stack):
    attacker, target, _ = pair
    victim_ip = address(docker_client, target, stack.network)
    attacker_mac = container(docker_client, attacker).attrs["NetworkSettings"]["Networks"][
        stack.network]["MacAddress"]
    gateway = docker_client.api.inspect_network(stack.network)["IPAM"]["Config"][0]["Gateway"]
    assert_listening(victim_ip)  # NOTE: the host has a neighbour entry for the victim now
    code, output = container(docker_client, attacker).exec_run(
        ["python3", "-c", FORGE_ARP, victim_ip, gateway])
    assert host_arp(victim_ip) != attacker_mac, "the host sends the victim's packets to it"
    assert code == 3 and "refused" in output.decode(), output  # no raw sockets (NET_RAW)


@pytest.fixture
def old_network(docker_client: docker.DockerClient, stack: Stack):
    """A network as an older Agentainer made it: labelled as its own, ICC on (the default)."""
    network = docker_client.networks.create(f"{stack.prefix}-old", driver="bridge",
                                            labels={"agentainer.managed": "1"})
    yield network
    for ct in docker_client.containers.list(all=True, filters={"network": network.name},
                                           ignore_removed=True):
        ct.remove(force=True)
    for net in docker_client.networks.list(names=[network.name]):
        net.remove()


def test_an_older_network_letting_agents_talk_is_recreated_with_icc_off(old_network,
                                                                        docker_client):
    network = old_network
    before = docker_client.api.inspect_network(network.id)
    recreated = DockerRuntime().ensure_network(network.name, internal=False)
    after = docker_client.api.inspect_network(recreated)
    assert recreated != network.id and after["Options"][ICC_OPTION] == "false"
    assert after["IPAM"]["Config"] == before["IPAM"]["Config"]  # the gateway stays put
    assert after["Labels"]["agentainer.managed"] == "1"


def test_an_older_network_letting_agents_talk_is_refused_while_containers_are_on_it(
        old_network, docker_client):
    network = old_network
    docker_client.containers.create(ECHO_IMAGE, network=network.name,
                                    name=f"{network.name}-{secrets.token_hex(3)}")
    with pytest.raises(Conflict) as raised:
        DockerRuntime().ensure_network(network.name, internal=False)
    assert raised.value.code == "network_mismatch"
    assert docker_client.api.inspect_network(network.id)["Id"] == network.id  # left alone


def test_an_older_network_with_containers_on_it_is_refused_until_migrated_as_told(
        docker_client, tmp_path_factory: pytest.TempPathFactory):
    """A server started on an older Agentainer's networks (ICC on): the empty one is
    recreated at once; deploys onto the one in use are refused, naming what to do."""
    redis_server = RedisServer(tmp_path_factory.mktemp("old-redis"))
    redis_server.start()
    prefix = f"agold{secrets.token_hex(3)}"
    stack = make_stack(redis_server.url, tmp_path_factory.mktemp("old-data"),
                       tmp_path_factory.mktemp("old-volumes"), prefix)
    try:
        for network, internal in ((stack.network, False), (stack.internal_network, True)):
            docker_client.networks.create(network, driver="bridge", internal=internal,
                                          labels={"agentainer.managed": "1"})
        left = docker_client.containers.create(ECHO_IMAGE, network=stack.network,
                                               name=f"{prefix}-left", labels={
                                                   "agentainer.managed": "1"})
        stack.start_server()
        api = Api(stack.url, stack.token)
        internal = docker_client.api.inspect_network(stack.internal_network)
        assert internal["Options"][ICC_OPTION] == "false"  # nothing on it: recreated

        reply = api.post("/agents", json={"name": f"{prefix}-a", "image": ECHO_IMAGE})
        assert reply.status_code == 409, reply.text
        body = reply.json()
        assert body["error"] == "network_mismatch" and f"{prefix}-left" in body["message"]
        assert f"docker network rm {stack.network}" in body["message"]

        left.remove(force=True)  # the migration the message gives
        docker_client.networks.get(stack.network).remove()
        stack.stop_all()
        stack.start_server()
        api.deploy(f"{prefix}-a", start=True)
        assert docker_client.api.inspect_network(stack.network)["Options"][ICC_OPTION] == "false"
    finally:
        stack.stop_all()
        _clean_docker(docker_client, prefix, redis_server.url, only_prefix=True)
        redis_server.stop()
