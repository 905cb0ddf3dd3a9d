"""No journaled request is lost when an agent, the server, a worker or Redis dies (make test-crash).

Each test ends with every request in exactly one terminal state.
"""

import threading
import time

import docker
import redis
import requests
import rq
from rq.serializers import JSONSerializer

from agentainer.journal.replay import QUEUE

from tests.conftest import RedisServer
from tests.helpers import wait_for
from tests.stack import Api, Stack
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


def test_server_killed_mid_request_is_redelivered_within_10_s(stack: Stack, api: Api, name: str):
    started(api, name)
    thread, result = in_background(lambda: requests.post(
        f"{stack.url}/agent/{name}/survive", data=b"s", headers={"X-Echo-Delay": "1"},
        timeout=30))
    time.sleep(0.4)
    stack.kill_server()
    killed = time.monotonic()
    thread.join()
    assert isinstance(result[0], requests.ConnectionError)
    stack.start_server()  # as supervisord would
    api = Api(stack.url, stack.token)
    request_id = journaled(api, name, "/survive")["id"]
    # NOTE: not the lease's deadline (connect + read timeout + 5 s): the dead server's
    # heartbeat expires (liveness_timeout, 5 s) and the janitor gives its lease back.
    done = wait_for_status(api, name, request_id, "completed", timeout=30)
    assert time.monotonic() - killed < 10
    assert done["attempts"] == 2 and done["resp_status"] == 200


def test_server_killed_with_an_answer_not_yet_recorded_redelivers_it_once(
        stack: Stack, api: Api, name: str, docker_client):
    """The gap of journal/completions.py: the client has its answer, the record does not.

    Redis takes no writes (CLIENT PAUSE WRITE) from just before the agent answers, so the
    server's completion cannot land; the client still gets its answer, and the server is
    killed with the completion pending. The request is redelivered once, then completed.
    """
    agent = started(api, name)
    connection = redis.Redis.from_url(stack.env["AGENTAINER_REDIS_URL"])
    thread, result = in_background(lambda: requests.post(
        f"{stack.url}/agent/{name}/gap", data=b"g", headers={"X-Echo-Delay": "1"},
        timeout=30))
    request_id = wait_for(lambda: next((r["id"] for r in all_records(api, name)
                                        if r["path"] == "/gap"), None),
                          timeout=5, interval=0.05, message="the request admitted")
    connection.execute_command("CLIENT", "PAUSE", "4000", "WRITE")
    try:
        thread.join(timeout=3)
        assert not thread.is_alive(), "the answer waited for its completion to land"
        assert result[0].status_code == 200 and result[0].json()["path"] == "/gap"
        stack.kill_server()
    finally:
        connection.execute_command("CLIENT", "UNPAUSE")
    assert connection.hget(f"agentainer:req:{request_id}", "status") == b"in_flight"
    stack.start_server()  # as supervisord would
    api = Api(stack.url, stack.token)
    done = wait_for_status(api, name, request_id, "completed", timeout=30)
    assert done["attempts"] == 2 and done["resp_status"] == 200
    assert served(docker_client, agent["id"], "/gap") == 2  # NOTE: redelivered once


def test_worker_killed_mid_drain_leaves_nothing_stale_and_delivery_resumes_within_10_s(
        stack: Stack, api: Api, name: str):
    agent = api.deploy(name)
    ids = [requests.post(f"{stack.url}/agent/{name}/replayed/{n}", data=b"r",
                         headers={"X-Echo-Delay": "2"}, timeout=30).json()["data"]["request_id"]
           for n in range(3)]
    assert api.post(f"/agents/{name}/start").status_code == 200
    wait_for_status(api, name, ids[0], "in_flight", timeout=30)
    connection = redis.Redis.from_url(stack.env["AGENTAINER_REDIS_URL"])
    busy = wait_for(lambda: [w for w in rq.Worker.all(connection=connection,
                                                      serializer=JSONSerializer)
                             if w.get_state() == "busy"], message="a busy worker")
    victim = next(w for w in stack.workers if w.pid == busy[0].pid)
    stack.kill_worker(victim)
    killed = time.monotonic()
    # NOTE: the other worker takes over: the dead one's claim and lease are freed once its
    # heartbeat expires, not when the lease's deadline passes
    again = wait_for(lambda: (r := record(api, name, ids[0]))["attempts"] == 2 and r,
                     timeout=15, interval=0.1, message="the request redelivered")
    assert again["status"] in ("in_flight", "completed")
    assert time.monotonic() - killed < 10
    done = [wait_for_status(api, name, rid, "completed", timeout=60) for rid in ids]
    assert [r["attempts"] for r in done] == [2, 1, 1]
    registry = rq.registry.StartedJobRegistry(QUEUE, connection=connection)
    jobs = [rq.job.Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
            for job_id in registry.get_job_ids(cleanup=False)]
    assert busy[0].name not in {job.worker_name for job in jobs}  # no orphaned RQ job
    assert busy[0].name not in {w.name for w in rq.Worker.all(connection=connection)}
    assert not connection.exists(f"agentainer:claims:{busy[0].name}",
                                 f"agentainer:held:{busy[0].name}")
    stack.start_workers(1)  # as supervisord would
    assert agent["id"]


def test_requests_during_redis_restarts_are_held_not_refused(stack: Stack, api: Api, name: str,
                                                            redis_server: RedisServer):
    """The proxy waits up to redis_wait (3 s) for Redis instead of answering 503."""
    started(api, name)
    replies: list = []
    stop = threading.Event()

    def client() -> None:
        session = requests.Session()
        for n in range(400):  # NOTE: bounded in count and time
            if stop.is_set():
                return
            replies.append(session.post(f"{stack.url}/agent/{name}/ride/{n}", data=b"x",
                                        timeout=30).status_code)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(2):
            time.sleep(0.5)
            redis_server.stop()
            time.sleep(0.3)
            redis_server.start()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert replies and set(replies) <= {200, 202}, sorted(set(replies))
    for worker in list(stack.workers):  # NOTE: RQ workers reconnect on their own
        assert worker.poll() is None
    wait_for(lambda: api.get(f"/agents/{name}/requests", params={"status": "queued"}
                             ).json()["data"]["total"] == 0, timeout=60, message="no queue")


def test_a_job_enqueued_by_hand_does_not_run(stack: Stack, tmp_path):
    """APPSEC: workers run only their drain jobs; a job naming os.system is refused."""
    connection = redis.Redis.from_url(stack.env["AGENTAINER_REDIS_URL"])
    marker = tmp_path / "pwned"
    for serializer in (JSONSerializer, None):  # NOTE: None: RQ's default, pickle
        queue = rq.Queue(QUEUE, connection=connection, serializer=serializer)
        job = queue.enqueue_call("os.system", args=(f"touch {marker}",))
        wait_for(lambda: job.get_status(refresh=True) == "failed", timeout=30,
                 message="the job to be refused")
    assert not marker.exists()


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
    draining = wait_for(lambda: [w.pid for w in rq.Worker.all(connection=connection,
                                                              serializer=JSONSerializer)
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
