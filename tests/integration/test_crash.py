"""No journaled request is lost when an agent, the server, a worker or Redis dies (make test-crash).

Each test ends with every request in exactly one terminal state.
"""

import threading
import time

import docker
import redis
import requests
import rq

from tests.conftest import RedisServer
from tests.helpers import wait_for
from tests.integration.conftest import Api, Stack
from tests.integration.journal_helpers import (
    all_records, record, served_paths, started, wait_for_status,
)


def in_background(call) -> tuple[threading.Thread, list]:
    result: list = []

    def run():
        try:
            result.append(call())
        except requests.RequestException as ex:
            result.append(ex)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def journaled(api: Api, name: str, path: str) -> dict:
    """Return the one journal record for ``path`` (failing if there are several)."""
    matching = wait_for(lambda: [r for r in all_records(api, name) if r["path"] == path],
                        timeout=10, message=f"a record for {path}")
    assert len(matching) == 1, matching
    return matching[0]


def served(docker_client: docker.DockerClient, agent_id: str, path: str) -> int:
    logs = docker_client.containers.get(f"agentainer-{agent_id}").logs().decode()
    return sum(1 for line in logs.splitlines() if line.split()[1:2] == [path])


def test_agent_killed_mid_request_is_replayed_once_it_is_back(stack: Stack, api: Api, name: str,
                                                               docker_client):
    agent = started(api, name)
    thread, result = in_background(lambda: requests.post(
        f"{stack.url}/agent/{name}/work", data=b"w", headers={"X-Echo-Delay": "1.5"},
        timeout=30))
    time.sleep(0.7)
    docker_client.containers.get(f"agentainer-{agent['id']}").kill()
    thread.join()
    reply = result[0]
    assert reply.status_code == 502, reply.text
    request_id = reply.json()["data"]["request_id"]
    queued = wait_for_status(api, name, request_id, "queued")
    assert queued["attempts"] == 1
    assert api.status(name) == "stopped"
    assert api.post(f"/agents/{name}/start").status_code == 200
    done = wait_for_status(api, name, request_id, "completed")
    assert done["attempts"] == 2 and done["resp_status"] == 200
    assert journaled(api, name, "/work")["id"] == request_id
    assert served(docker_client, agent["id"], "/work") == 1


def test_server_killed_mid_request_is_replayed_after_restart(stack: Stack, api: Api, name: str):
    started(api, name)
    thread, result = in_background(lambda: requests.post(
        f"{stack.url}/agent/{name}/survive", data=b"s", headers={"X-Echo-Delay": "1"},
        timeout=30))
    time.sleep(0.4)
    stack.kill_server()
    thread.join()
    assert isinstance(result[0], requests.ConnectionError)
    stack.start_server()
    api = Api(stack.url, stack.token)
    request_id = journaled(api, name, "/survive")["id"]
    # The lease (connect + read timeout + 5 s = 12 s here) expires, the janitor sweeps it.
    done = wait_for_status(api, name, request_id, "completed", timeout=60)
    assert done["attempts"] == 2 and done["resp_status"] == 200


def test_worker_killed_mid_delivery_is_delivered_by_another(stack: Stack, api: Api, name: str):
    api.deploy(name)
    reply = requests.post(f"{stack.url}/agent/{name}/replayed", data=b"r",
                          headers={"X-Echo-Delay": "3"}, timeout=30)
    request_id = reply.json()["data"]["request_id"]
    assert api.post(f"/agents/{name}/start").status_code == 200
    wait_for_status(api, name, request_id, "in_flight", timeout=30)
    connection = redis.Redis.from_url(stack.env["AGENTAINER_REDIS_URL"])
    busy = wait_for(lambda: [w.pid for w in rq.Worker.all(connection=connection)
                             if w.get_state() == "busy"], message="a busy worker")
    victim = next(w for w in stack.workers if w.pid in busy)
    stack.kill_worker(victim)
    stack.start_workers(1)  # as supervisord would
    done = wait_for_status(api, name, request_id, "completed", timeout=60)
    assert done["attempts"] == 2
    assert journaled(api, name, "/replayed")["status"] == "completed"


def test_queued_requests_survive_a_redis_crash(stack: Stack, api: Api, name: str,
                                               redis_server: RedisServer):
    api.deploy(name)
    ids = [requests.post(f"{stack.url}/agent/{name}/kept/{n}", timeout=30).json()["data"]
           ["request_id"] for n in range(5)]
    time.sleep(1.5)  # appendfsync everysec: at most ~1 s of writes is at risk
    redis_server.crash()
    redis_server.start()
    assert [record(api, name, rid)["status"] for rid in ids] == ["queued"] * 5
    for worker in list(stack.workers):
        if worker.poll() is not None:  # a worker that gave up on Redis: supervisord restarts it
            stack.workers.remove(worker)
            stack.start_workers(1)
    wait_for(lambda: api.post(f"/agents/{name}/start").status_code == 200, timeout=30,
             message="the start to go through")
    for rid in ids:
        assert wait_for_status(api, name, rid, "completed")["attempts"] == 1


def test_worker_term_mid_drain_waits_for_one_slice_not_the_queue(stack: Stack, api: Api,
                                                                 name: str, docker_client):
    """TERM is a warm shutdown: the drain job ends after its 10 s slice and one delivery
    (here 1.5 s), not after the 30 s queue; a fresh job on another worker carries on."""
    agent = api.deploy(name)
    paths = [f"/long/{n}" for n in range(20)]
    ids = [requests.post(f"{stack.url}/agent/{name}{path}", headers={"X-Echo-Delay": "1.5"},
                         timeout=30).json()["data"]["request_id"] for path in paths]
    assert api.post(f"/agents/{name}/start").status_code == 200
    connection = redis.Redis.from_url(stack.env["AGENTAINER_REDIS_URL"])
    draining = wait_for(lambda: [w.pid for w in rq.Worker.all(connection=connection)
                                 if (job := w.get_current_job()) and job.args[0] == agent["id"]],
                        message="a worker draining the agent")
    victim = next(w for w in stack.workers if w.pid in draining)
    asked = time.monotonic()
    victim.terminate()
    victim.wait(timeout=60)
    assert time.monotonic() - asked < 20
    stack.workers.remove(victim)
    stack.start_workers(1)  # as supervisord would
    done = [wait_for_status(api, name, rid, "completed", timeout=120) for rid in ids]
    assert all(r["attempts"] == 1 for r in done)
    assert served_paths(docker_client, agent["id"]) == paths
