"""Helpers for reading the request journal through the API."""

from tests.helpers import wait_for
from tests.integration.conftest import Api


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
