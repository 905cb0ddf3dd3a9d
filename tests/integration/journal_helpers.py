"""Helpers for reading the request journal through the API, and what replay left behind."""

import docker

from tests.helpers import wait_for
from tests.stack import Api, Stack


def record(api: Api, agent: str, request_id: str) -> dict:
    reply = api.get(f"/agents/{agent}/requests/{request_id}")
    assert reply.status_code == 200, reply.text
    return reply.json()["data"]


def wait_for_status(api: Api, agent: str, request_id: str, status: str,
                    timeout: float = 60) -> dict:
    return wait_for(lambda: (r := record(api, agent, request_id))["status"] == status and r,
                    timeout=timeout, interval=0.2,
                    message=f"request {request_id} to be {status}")


def all_records(api: Api, agent: str) -> list[dict]:
    return api.get(f"/agents/{agent}/requests", params={"limit": 500}).json()["data"]["requests"]


def started(api: Api, name: str, **fields) -> dict:
    """Deploy and start an agent; wait until its app answers through the proxy and the
    probes that were queued while it started have been replayed."""
    agent = api.deploy(name, start=True, **fields)
    wait_for(lambda: api.session.get(f"{api.url}/agent/{name}/health", timeout=5).status_code
             == 200, timeout=30, message=f"{name} to answer")
    wait_for(lambda: api.get(f"/agents/{name}/requests", params={"status": "queued"}
                             ).json()["data"]["total"] == 0, timeout=30, message="no queue")
    return agent


def served_paths(docker_client: docker.DockerClient, agent_id: str) -> list[str]:
    """Return the paths the agent's app served, in order (from its request log lines)."""
    logs = docker_client.containers.get(f"agentainer-{agent_id}").logs().decode()
    return [line.split()[1] for line in logs.splitlines()
            if line.split()[:1] in (["GET"], ["POST"]) and len(line.split()) == 3]


def worker_log_lines(stack: Stack, text: str) -> list[str]:
    """Return the replay workers' log lines containing ``text``."""
    return [line for log in sorted(stack.data_dir.glob("worker-*.log"))
            for line in log.read_text(errors="replace").splitlines() if text in line]
