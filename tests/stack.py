"""The real server process, a REST session and the real CLI, on isolated networks.

Everything the tests create is named with this session's prefix and removed at the end.
"""

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
import redis
import requests

from tests.helpers import free_port, wait_for

BIN = Path(__file__).resolve().parents[1] / "bin"
ECHO_IMAGE = "agentainer/echo-agent:latest"
STATEFUL_IMAGE = "agentainer/stateful-agent:latest"
STREAM_IMAGE = "agentainer/stream-agent:latest"
BASE_IMAGE = "agentainer/python-base:latest"


# Short timeouts so crash recovery (lease expiry = connect + read timeout + 5 s) is quick.
TEST_SETTINGS = {
    "AGENTAINER_STOP_TIMEOUT": "3s", "AGENTAINER_LOCK_TIMEOUT": "60s",
    "AGENTAINER_CONNECT_TIMEOUT": "2s", "AGENTAINER_READ_TIMEOUT": "5s",
    "AGENTAINER_MAX_BODY": "1m", "AGENTAINER_CAPTURE_LIMIT": "64k",
    "AGENTAINER_QUEUE_LIMIT": "50", "AGENTAINER_MAX_ATTEMPTS": "3",
    "AGENTAINER_RETRY_BASE": "200ms", "AGENTAINER_RETRY_CAP": "1s",
    "AGENTAINER_DRAIN_WAIT": "30s", "AGENTAINER_THREADS": "64",
    # NOTE: a queued request gets its 202 at once, as most tests expect; the traffic tests
    # hold with Prefer: wait=N or an agent's hold, and test_traffic.py the shipped default
    "AGENTAINER_HOLD": "0s",
}


@dataclass
class Stack:
    """The processes under test: one server and two replay workers, restartable."""

    url: str
    env: dict[str, str]
    prefix: str
    data_dir: Path
    volume_root: Path
    network: str
    internal_network: str
    server: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    token: str = ""
    args: tuple[str, ...] = ()  # flags every program gets (e.g. --config FILE)

    def _spawn(self, script: str, log_name: str) -> subprocess.Popen:
        log = open(self.data_dir / log_name, "ab")
        return subprocess.Popen([sys.executable, str(BIN / script), *self.args], env=self.env,
                                stdout=log, stderr=subprocess.STDOUT)

    def start_server(self) -> None:
        self.server = self._spawn("agentainer-server", "server.log")
        wait_for(lambda: requests.get(self.url + "/health", timeout=2).ok, timeout=30,
                 message="the server's /health")
        self.token = (self.data_dir / "admin.token").read_text().strip()

    def kill_server(self) -> None:
        """SIGKILL, as a crash would."""
        self.server.kill()
        self.server.wait(timeout=10)

    def start_workers(self, count: int = 2) -> None:
        self.workers += [self._spawn("agentainer-worker", f"worker-{len(self.workers)}.log")
                         for _ in range(count)]

    def kill_worker(self, worker: subprocess.Popen) -> None:
        worker.kill()
        worker.wait(timeout=10)
        self.workers.remove(worker)

    def stop_all(self) -> None:
        for process in [self.server, *self.workers]:
            if process and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
        self.workers.clear()


def make_stack(redis_url: str, data_dir: Path, volume_root: Path, prefix: str,
               **settings: str) -> Stack:
    """Return a stack (not started) on its own port against ``redis_url``; ``settings``
    are AGENTAINER_* variables over TEST_SETTINGS."""
    conf = data_dir / "empty.conf"
    conf.write_text("[agentainer]\n")
    port = free_port()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("AGENTAINER_")}
    # NOTE: the tests' own redis-server, password-less, is an external Redis to the stack
    env.update(TEST_SETTINGS, AGENTAINER_CONFIG=str(conf), AGENTAINER_REDIS_URL=redis_url,
               AGENTAINER_EMBEDDED_REDIS="false", AGENTAINER_PORT=str(port),
               AGENTAINER_DATA_DIR=str(data_dir),
               AGENTAINER_NETWORK=f"{prefix}-net",
               AGENTAINER_INTERNAL_NETWORK=f"{prefix}-internal",
               AGENTAINER_VOLUME_ROOTS=str(volume_root), **settings)
    return Stack(f"http://127.0.0.1:{port}", env, prefix, data_dir, volume_root,
                 f"{prefix}-net", f"{prefix}-internal")


def listed_volume(prefix: str) -> str:
    """The named volume the session's server lists in ``allowed_volumes``."""
    return f"{prefix}-listed"


@pytest.fixture(scope="session")
def stack(redis_url: str, docker_client: docker.DockerClient,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Run ``bin/agentainer-server`` and two workers against the test Redis."""
    for image in (ECHO_IMAGE, STATEFUL_IMAGE, STREAM_IMAGE, BASE_IMAGE):
        try:
            docker_client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"{image} is missing; make test builds it (make images)")
    prefix = f"agtest{secrets.token_hex(3)}"
    stack = make_stack(redis_url, tmp_path_factory.mktemp("data"),
                       tmp_path_factory.mktemp("volumes"), prefix,
                       AGENTAINER_ALLOWED_VOLUMES=listed_volume(prefix))
    try:
        stack.start_server()
        stack.start_workers()
        yield stack
    finally:
        stack.stop_all()
        _clean_docker(docker_client, prefix, redis_url)


def _clean_docker(client: docker.DockerClient, prefix: str, redis_url: str, *,
                  only_prefix: bool = False) -> None:
    """Remove every container, volume and network this session created."""
    agent_ids = set() if only_prefix else {
        key.decode().rsplit(":", 1)[1]
        for key in redis.Redis.from_url(redis_url).scan_iter("agentainer:agent:*")}
    for container in client.containers.list(all=True, filters={"label": "agentainer.managed=1"},
                                           ignore_removed=True):
        network_names = container.attrs["NetworkSettings"]["Networks"]
        if container.labels.get("agentainer.id") in agent_ids or any(
                name.startswith(prefix) for name in network_names):
            with contextlib.suppress(docker.errors.NotFound):  # NOTE: gone meanwhile
                container.remove(force=True, v=True)
    for volume in client.volumes.list(filters={"name": prefix}):
        with contextlib.suppress(docker.errors.NotFound):
            volume.remove(force=True)
    for network in client.networks.list(names=[f"{prefix}-net", f"{prefix}-internal",
                                               f"{prefix}-int"]):
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


@pytest.fixture
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
