"""The Swarm stack under test: the one ``make swarm-up`` deployed (``make test-swarm``).

A missing stack fails the tests (it is not a skip): ``make test`` runs them through
``make test-swarm``, which deploys it first.
"""

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

URL = os.environ.get("AGENTAINER_SWARM_URL", "http://127.0.0.1:8091")
TOKEN_FILE = Path(os.environ.get("AGENTAINER_SWARM_DIR",
                                 Path.home() / ".agentainer-swarm")) / "admin.token"


class Api:
    """The stack's REST API with the admin token."""

    def __init__(self) -> None:
        self.url = URL
        self.token = TOKEN_FILE.read_text().strip()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.token}"

    def get(self, path: str, **options) -> requests.Response:
        return self.session.get(self.url + path, timeout=30, **options)

    def post(self, path: str, **options) -> requests.Response:
        options.setdefault("timeout", 90)
        return self.session.post(self.url + path, **options)

    def delete(self, path: str, **options) -> requests.Response:
        return self.session.delete(self.url + path, timeout=90, **options)

    def agent(self, ref: str) -> dict:
        return self.get(f"/agents/{ref}").json()["data"]

    def deploy(self, **fields) -> dict:
        body = {"name": f"swarm-{uuid.uuid4().hex[:8]}",
                "image": "agentainer/echo-agent:latest", **fields}
        reply = self.post("/agents", json=body)
        assert reply.status_code == 201, reply.text
        return reply.json()["data"]


def docker(*args: str, host: str | None = None, check: bool = True) -> str:
    command = ["docker", *(["-H", host] if host else []), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if check and done.returncode:
        raise AssertionError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done.stdout.strip()


def wait_for(probe, *, timeout: float, what: str, interval: float = 0.5):
    """Return ``probe()``'s first truthy value within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = probe()
        except requests.RequestException:
            found = None
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"{what} within {timeout:.0f}s")


def service_of(agent_id: str) -> dict:
    found = docker("service", "ls", "-q", "--filter", f"label=agentainer.id={agent_id}")
    assert found, f"no service for {agent_id}"
    import json
    return json.loads(docker("service", "inspect", found.split()[0]))[0]


def running_tasks(agent_id: str) -> list[str]:
    """Return the IDs of the agent's running tasks."""
    service = service_of(agent_id)["ID"]
    lines = docker("service", "ps", service, "--filter", "desired-state=running",
                   "--format", "{{.ID}} {{.CurrentState}}").splitlines()
    return [line.split()[0] for line in lines if " Running " in f" {line} "]


def task_container(task_id: str) -> tuple[str, str]:
    """Return (container ID, node ID) of a task."""
    found = docker("inspect", task_id, "--format",
                   "{{.Status.ContainerStatus.ContainerID}} {{.NodeID}}")
    container, node = found.split()
    return container, node


@pytest.fixture(scope="session")
def api() -> Api:
    if not TOKEN_FILE.is_file():
        pytest.fail(f"no Swarm stack: {TOKEN_FILE} is missing; run make swarm-up (make "
                    "test-swarm does)")
    client = Api()
    try:
        health = requests.get(URL + "/health", timeout=5)
    except requests.RequestException as ex:
        pytest.fail(f"the Swarm stack does not answer at {URL} ({ex}); run make swarm-up")
    assert health.ok, health.text
    return client


@pytest.fixture
def agents(api: Api) -> Iterator[list[str]]:
    """Agents the test deployed (by ID): removed afterwards."""
    made: list[str] = []
    yield made
    for agent_id in made:
        api.delete(f"/agents/{agent_id}")
