"""Traffic management on the real stack: ordered delivery and per-agent concurrency."""

import concurrent.futures
import time

import docker
import requests

from tests.helpers import wait_for
from tests.stack import Api, Stack
from tests.integration.journal_helpers import served_paths, started, wait_for_status


def post(stack: Stack, ref: str, path: str, **kwargs) -> requests.Response:
    return requests.post(f"{stack.url}/agent/{ref}{path}", timeout=60, **kwargs)


def queue(stack: Stack, name: str, paths: list[str]) -> list[str]:
    ids = []
    for path in paths:
        reply = post(stack, name, path)
        assert reply.status_code == 202, reply.text
        ids.append(reply.json()["data"]["request_id"])
    return ids


def agent_id(api: Api, name: str) -> str:
    return api.get(f"/agents/{name}").json()["data"]["id"]


def test_a_live_request_waits_behind_the_backlog(stack: Stack, api: Api, name: str,
                                                 docker_client: docker.DockerClient):
    """Three requests queued while stopped, the agent started, a live request sent at once:
    the agent sees them in arrival order."""
    started(api, name)
    assert api.post(f"/agents/{name}/stop").status_code == 200
    ids = queue(stack, name, ["/order/1", "/order/2", "/order/3"])
    assert api.post(f"/agents/{name}/start").status_code == 200
    live = post(stack, name, "/order/4")
    assert live.status_code == 202, live.text  # NOTE: the test stack holds nothing
    assert "queued before this one" in live.json()["message"]
    for rid in [*ids, live.json()["data"]["request_id"]]:
        wait_for_status(api, name, rid, "completed")
    served = [p for p in served_paths(docker_client, agent_id(api, name))
              if p.startswith("/order/")]
    assert served == ["/order/1", "/order/2", "/order/3", "/order/4"]


def test_unordered_lets_a_live_request_overtake(stack: Stack, api: Api, name: str,
                                                docker_client: docker.DockerClient):
    started(api, name, ordered=False)
    assert api.get(f"/agents/{name}").json()["data"]["ordered"] is False
    assert api.post(f"/agents/{name}/pause").status_code == 200
    ids = queue(stack, name, ["/slow/1", "/slow/2"])
    # NOTE: a drain claim without a queue would hold an ordered agent's live request back
    assert api.post(f"/agents/{name}/resume").status_code == 200
    live = post(stack, name, "/fast")
    assert live.status_code in (200, 202), live.text
    for rid in ids:
        wait_for_status(api, name, rid, "completed")
    assert "/fast" in served_paths(docker_client, agent_id(api, name))


def test_max_concurrency_queues_the_rest_in_order(stack: Stack, api: Api, name: str,
                                                  docker_client: docker.DockerClient):
    started(api, name, max_concurrency=2)
    slow = {"X-Echo-Delay": "2"}
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        first = [pool.submit(post, stack, name, f"/slow/{n}", headers=slow) for n in (1, 2)]
        time.sleep(0.5)  # NOTE: both are in flight now
        rest = []
        for n in (3, 4, 5):
            rest.append(post(stack, name, f"/slow/{n}", headers=slow))
        for reply in rest:
            assert reply.status_code == 202, reply.text
            assert "max_concurrency" in reply.json()["message"] or \
                "queued before" in reply.json()["message"]
        assert [f.result().status_code for f in first] == [200, 200]
    for reply in rest:
        stored = wait_for_status(api, name, reply.json()["data"]["request_id"], "completed")
        assert stored["attempts"] == 1
    served = [p for p in served_paths(docker_client, agent_id(api, name))
              if p.startswith("/slow/")]
    assert sorted(served[:2]) == ["/slow/1", "/slow/2"]
    assert served[2:] == ["/slow/3", "/slow/4", "/slow/5"]


def test_max_concurrency_never_exceeded_by_replay(stack: Stack, api: Api, name: str,
                                                  docker_client: docker.DockerClient):
    """Requests queued while stopped drain one by one while a live one holds the only slot."""
    started(api, name, max_concurrency=1, ordered=False)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        live = pool.submit(post, stack, name, "/long", headers={"X-Echo-Delay": "3"})
        time.sleep(0.5)
        queued = queue(stack, name, ["/after/1", "/after/2"])
        time.sleep(1.5)  # NOTE: the drain is waiting for room, not delivering
        assert [wait_for_status(api, name, rid, "queued", timeout=1)["status"]
                for rid in queued] == ["queued", "queued"]
        assert live.result().status_code == 200
    for rid in queued:
        wait_for_status(api, name, rid, "completed")
    served = served_paths(docker_client, agent_id(api, name))
    assert served.index("/long") < served.index("/after/1") < served.index("/after/2")


def test_on_busy_reject_is_429_with_retry_after(stack: Stack, api: Api, name: str):
    started(api, name, max_concurrency=1, on_busy="reject")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        live = pool.submit(post, stack, name, "/long", headers={"X-Echo-Delay": "2"})
        wait_for(lambda: api.get(f"/agents/{name}/requests", params={"status": "in_flight"}
                                 ).json()["data"]["total"] == 1, timeout=5,
                 message="the slow request in flight")
        refused = post(stack, name, "/other")
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "agent_at_capacity"
        assert refused.headers["Retry-After"] == "1"
        assert live.result().status_code == 200
    assert post(stack, name, "/other").status_code == 200


def test_max_concurrency_needs_persist(api: Api, name: str):
    reply = api.post("/agents", json={"name": name, "image": "agentainer/echo-agent:latest",
                                      "max_concurrency": 2, "persist": False})
    assert reply.status_code == 409, reply.text
    assert reply.json()["error"] == "concurrency_needs_persist"
