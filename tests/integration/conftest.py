"""The real server process, a REST session and the real CLI, on isolated networks.

Everything the tests create is named with this session's prefix and removed at the end.
"""

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import redis
import requests

from tests.helpers import free_port, wait_for

BIN = Path(__file__).resolve().parents[2] / "bin"
ECHO_IMAGE = "agentainer/echo-agent:latest"
STATEFUL_IMAGE = "agentainer/stateful-agent:latest"
BASE_IMAGE = "agentainer/python-base:latest"


@dataclass
class Stack:
    url: str
    token: str
    env: dict[str, str]
    prefix: str
    data_dir: Path
    volume_root: Path
    network: str
    internal_network: str


@pytest.fixture(scope="session")
def stack(redis_url: str, docker_client: docker.DockerClient,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Run ``bin/agentainer-server`` against the test Redis on a free port."""
    for image in (ECHO_IMAGE, STATEFUL_IMAGE, BASE_IMAGE):
        try:
            docker_client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"{image} is missing; make test builds it (make images)")
    prefix = f"agtest{secrets.token_hex(3)}"
    data_dir = tmp_path_factory.mktemp("data")
    volume_root = tmp_path_factory.mktemp("volumes")
    conf = data_dir / "empty.conf"
    conf.write_text("[agentainer]\n")
    port = free_port()
    env = {**os.environ, "AGENTAINER_CONFIG": str(conf), "AGENTAINER_REDIS_URL": redis_url,
           "AGENTAINER_PORT": str(port), "AGENTAINER_DATA_DIR": str(data_dir),
           "AGENTAINER_NETWORK": f"{prefix}-net",
           "AGENTAINER_INTERNAL_NETWORK": f"{prefix}-internal",
           "AGENTAINER_VOLUME_ROOTS": str(volume_root), "AGENTAINER_STOP_TIMEOUT": "3s",
           "AGENTAINER_LOCK_TIMEOUT": "60s"}
    env.pop("AGENTAINER_TOKEN", None)
    env.pop("AGENTAINER_URL", None)
    log = open(data_dir / "server.log", "wb")
    process = subprocess.Popen([sys.executable, str(BIN / "agentainer-server")], env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(url + "/health", timeout=2).ok, timeout=30,
                 message="the server's /health")
        token = (data_dir / "admin.token").read_text().strip()
        yield Stack(url, token, env, prefix, data_dir, volume_root,
                    f"{prefix}-net", f"{prefix}-internal")
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()
        _clean_docker(docker_client, prefix, redis_url)


def _clean_docker(client: docker.DockerClient, prefix: str, redis_url: str) -> None:
    """Remove every container, volume and network this session created."""
    agent_ids = {key.decode().rsplit(":", 1)[1]
                 for key in redis.Redis.from_url(redis_url).scan_iter("agentainer:agent:*")}
    for container in client.containers.list(all=True, filters={"label": "agentainer.managed=1"}):
        network_names = container.attrs["NetworkSettings"]["Networks"]
        if container.labels.get("agentainer.id") in agent_ids or any(
                name.startswith(prefix) for name in network_names):
            container.remove(force=True, v=True)
    for volume in client.volumes.list(filters={"name": prefix}):
        volume.remove(force=True)
    for network in client.networks.list(names=[f"{prefix}-net", f"{prefix}-internal"]):
        network.remove()


class Api:
    """A REST session with the admin token; returns ``requests.Response`` objects."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        return self.session.request(method, self.url + path, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def deploy(self, name: str, image: str = ECHO_IMAGE, **fields) -> dict:
        reply = self.post("/agents", json={"name": name, "image": image, **fields})
        assert reply.status_code == 201, reply.text
        return reply.json()["data"]

    def status(self, ref: str) -> str:
        return self.get(f"/agents/{ref}").json()["data"]["status"]


@pytest.fixture(scope="session")
def api(stack: Stack) -> Api:
    return Api(stack.url, stack.token)


@pytest.fixture
def name(stack: Stack, request: pytest.FixtureRequest) -> str:
    """A unique agent name for this test."""
    return f"{stack.prefix}-{secrets.token_hex(3)}"


def run_cli(stack: Stack, *args: str, token: str | None = "admin",
            timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``bin/agentainer`` as a user would, against the test server."""
    env = {**stack.env, "AGENTAINER_URL": stack.url}
    if token == "admin":
        env["AGENTAINER_TOKEN"] = stack.token
    elif token:
        env["AGENTAINER_TOKEN"] = token
    return subprocess.run([sys.executable, str(BIN / "agentainer"), *args], env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
