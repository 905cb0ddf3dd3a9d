"""What Docker shows for an agent's container: isolation, limits, mounts, env, network."""

import io

import docker
import pytest
import requests

from tests.helpers import free_port, wait_for
from tests.stack import BASE_IMAGE, STATEFUL_IMAGE, Api, Stack, listed_volume


def inspect(docker_client: docker.DockerClient, agent: dict) -> dict:
    return docker_client.api.inspect_container(f"agentainer-{agent['id']}")


@pytest.fixture(scope="module")
def image_exposing(docker_client: docker.DockerClient, stack: Stack):
    """Build (offline, from the local base image) images exposing the given ports."""
    built = set()

    def build(*ports: int) -> str:
        tag = f"{stack.prefix}-expose{'-'.join(map(str, ports)) or 'none'}:latest"
        if tag not in built:
            dockerfile = f"FROM {BASE_IMAGE}\n" + "".join(f"EXPOSE {p}\n" for p in ports)
            docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag,
                                       rm=True, forcerm=True)  # NOTE: leave no containers
            built.add(tag)
        return tag

    yield build
    for tag in built:
        docker_client.images.remove(tag, force=True)


def test_container_spec(api: Api, name: str, stack: Stack, docker_client):
    volume = f"{stack.prefix}-vol"
    host_dir = stack.volume_root / name
    agent = api.deploy(name, env_vars={"GREETING": "a,b=c"}, cpu_limit="500m",
                       memory_limit="256m", pids_limit=64,
                       volumes=[{"host_path": str(host_dir), "container_path": "/host"},
                                {"volume": volume, "container_path": "/named",
                                 "read_only": True}])
    info = inspect(docker_client, agent)
    host = info["HostConfig"]
    assert info["Name"] == f"/agentainer-{agent['id']}"
    assert not host["PortBindings"] and not host["PublishAllPorts"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 256 * 1024 * 1024
    assert host["PidsLimit"] == 64
    assert "no-new-privileges" in host["SecurityOpt"]
    mounts = {m["Target"]: m for m in host["Mounts"]}
    assert mounts["/host"]["Type"] == "bind" and mounts["/host"]["Source"] == str(host_dir)
    assert mounts["/named"] == {**mounts["/named"], "Type": "volume", "Source": volume,
                                "ReadOnly": True}
    assert not any("docker.sock" in m["Source"] for m in host["Mounts"])
    env = dict(item.split("=", 1) for item in info["Config"]["Env"])
    assert env["GREETING"] == "a,b=c"
    assert env["AGENT_ID"] == agent["id"] and env["AGENT_NAME"] == name
    gateway = docker_client.api.inspect_network(stack.network)["IPAM"]["Config"][0]["Gateway"]
    port = stack.url.rsplit(":", 1)[1]
    assert env["AGENTAINER_PROXY_URL"] == f"http://{gateway}:{port}/agent"
    labels = info["Config"]["Labels"]
    assert labels["agentainer.id"] == agent["id"] and labels["agentainer.name"] == name
    assert labels["agentainer.managed"] == "1"
    networks = info["NetworkSettings"]["Networks"]
    assert list(networks) == [stack.network]
    assert {agent["id"], name} <= set(networks[stack.network]["Aliases"])


def test_started_container_publishes_nothing(api: Api, name: str, docker_client):
    agent = api.deploy(name, start=True)
    ports = inspect(docker_client, agent)["NetworkSettings"]["Ports"]
    assert all(not bindings for bindings in ports.values())


def test_no_egress_joins_the_internal_network(api: Api, name: str, stack: Stack, docker_client):
    agent = api.deploy(name, egress=False)
    assert list(inspect(docker_client, agent)["NetworkSettings"]["Networks"]) == \
        [stack.internal_network]
    assert docker_client.api.inspect_network(stack.internal_network)["Internal"] is True
    assert docker_client.api.inspect_network(stack.network)["Internal"] is False


@pytest.mark.parametrize("ports, flag, expected", [
    ((9000,), None, 9000),        # the image's single EXPOSE
    ((), None, 8000),             # nothing exposed: the default
    ((9000, 9001), None, 8000),   # ambiguous: the default
    ((9000,), 7000, 7000),        # --app-port wins
])
def test_app_port(api: Api, name: str, image_exposing, ports, flag, expected):
    fields = {"app_port": flag} if flag else {}
    agent = api.deploy(name, image=image_exposing(*ports), **fields)
    assert agent["app_port"] == expected


def test_volume_data_survives_stop_and_start(api: Api, name: str, stack: Stack, docker_client):
    agent = api.deploy(name, image=STATEFUL_IMAGE, start=True,
                       volumes=[{"volume": f"{stack.prefix}-state", "container_path": "/app/data"}])

    def app_url() -> str:
        networks = inspect(docker_client, agent)["NetworkSettings"]["Networks"]
        return f"http://{networks[stack.network]['IPAddress']}:8000"

    wait_for(lambda: requests.get(app_url() + "/health", timeout=2).ok, message="the app")
    for _ in range(3):
        assert requests.post(app_url() + "/process", json={"n": 1}, timeout=5).ok
    assert api.post(f"/agents/{name}/stop").status_code == 200
    assert api.post(f"/agents/{name}/start").status_code == 200
    state = wait_for(lambda: requests.get(app_url() + "/state", timeout=2).json(),
                     message="the restarted app")
    assert state["processed_count"] == 3


@pytest.fixture
def rogue_network(docker_client: docker.DockerClient, stack: Stack):
    """A plain (not internal) bridge network, made before Agentainer looks for one."""
    network = docker_client.networks.create(f"{stack.prefix}-rogue", driver="bridge")
    yield network.name
    network.remove()


def test_no_egress_refuses_a_same_named_network_that_is_not_internal(
        stack: Stack, rogue_network: str, name: str, docker_client):
    """APPSEC: reusing it would give --no-egress agents a way out."""
    port = free_port()
    env = {**stack.env, "AGENTAINER_INTERNAL_NETWORK": rogue_network,
           "AGENTAINER_PORT": str(port)}
    other = Stack(f"http://127.0.0.1:{port}", env, stack.prefix, stack.data_dir,
                  stack.volume_root, stack.network, rogue_network)
    try:
        other.start_server()
        api = Api(other.url, other.token)
        reply = api.post("/agents", json={"name": name, "image": STATEFUL_IMAGE, "egress": False})
        assert reply.status_code == 409, reply.text
        assert reply.json()["error"] == "network_mismatch"
        message = reply.json()["message"]
        assert rogue_network in message and "not internal" in message
        assert api.get(f"/agents/{name}").status_code == 404
        assert api.deploy(name, image=STATEFUL_IMAGE)["egress"] is True  # egress still works
    finally:
        other.stop_all()
    info = docker_client.api.inspect_network(rogue_network)
    assert info["Internal"] is False and not info["Containers"]


def test_remove_with_volumes_removes_only_volumes_made_for_the_agent(
        api: Api, name: str, stack: Stack, docker_client):
    created, foreign = f"{stack.prefix}-gone", listed_volume(stack.prefix)
    docker_client.volumes.create(foreign)  # NOTE: mountable because allowed_volumes lists it
    agent = api.deploy(name, start=True,
                       volumes=[{"volume": created, "container_path": "/data"},
                                {"volume": foreign, "container_path": "/foreign"}])
    assert docker_client.volumes.get(created).attrs["Labels"] == {
        "agentainer.managed": "1", "agentainer.id": agent["id"]}
    assert not docker_client.volumes.get(foreign).attrs["Labels"]
    reply = api.delete(f"/agents/{name}", params={"volumes": "true"})
    assert reply.status_code == 200
    assert reply.json()["data"]["kept_volumes"] == [foreign]
    assert foreign in reply.json()["message"]
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(created)
    docker_client.volumes.get(foreign).remove()  # not Agentainer's: it survived


def test_remove_without_volumes_keeps_them(api: Api, name: str, stack: Stack, docker_client):
    volume = f"{stack.prefix}-kept-{name}"
    api.deploy(name, volumes=[{"volume": volume, "container_path": "/data"}])
    assert api.delete(f"/agents/{name}").status_code == 200
    docker_client.volumes.get(volume).remove()


@pytest.mark.parametrize("host_path", [
    "/", "/etc", "/etc/ssh", "/proc", "/sys", "/dev", "/boot",
    "/var/run/docker.sock", "/run/docker.sock", "/usr/lib",
])
def test_refused_host_paths(api: Api, name: str, host_path: str, docker_client):
    reply = api.post("/agents", json={"name": name, "image": "agentainer/echo-agent",
                                      "volumes": [{"host_path": host_path,
                                                   "container_path": "/x"}]})
    assert reply.status_code == 403, reply.text
    assert reply.json()["error"] == "volume_refused"
    assert api.get(f"/agents/{name}").status_code == 404
    assert not docker_client.containers.list(all=True, filters={"label": f"agentainer.name={name}"})


def test_data_dir_is_refused_even_under_a_root(api: Api, name: str, stack: Stack):
    reply = api.post("/agents", json={"name": name, "image": "agentainer/echo-agent",
                                      "volumes": [{"host_path": str(stack.data_dir),
                                                   "container_path": "/x"}]})
    assert reply.status_code == 403 and reply.json()["error"] == "volume_refused"
    assert "data directory" in reply.json()["message"] or "outside" in reply.json()["message"]


def test_missing_image_is_404_and_leaves_nothing(api: Api, name: str):
    reply = api.post("/agents", json={"name": name, "image": "no-such/image:1"})
    assert reply.status_code == 404
    assert reply.json()["error"] == "image_not_found"
    assert api.get(f"/agents/{name}").status_code == 404
