"""Traffic management on the real stack: ordered delivery and per-agent concurrency."""

import concurrent.futures
import socket
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


def idle(api: Api, name: str) -> None:
    """Wait until no request is in flight to the agent (a probe queued while it started
    may still be replayed, and take a max_concurrency slot)."""
    wait_for(lambda: api.get(f"/agents/{name}/requests", params={"status": "in_flight"}
                             ).json()["data"]["total"] == 0, timeout=10,
             message="nothing in flight")


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
    idle(api, name)
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
    idle(api, name)
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
    idle(api, name)
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


# -- hold ------------------------------------------------------------------------------

def later(seconds: float, action) -> concurrent.futures.Future:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(lambda: (time.sleep(seconds), action())[1])
    pool.shutdown(wait=False)
    return future


def stopped_agent(api: Api, name: str, **fields) -> None:
    started(api, name, **fields)
    assert api.post(f"/agents/{name}/stop").status_code == 200


def test_prefer_wait_holds_until_the_agent_answers(stack: Stack, api: Api, name: str):
    stopped_agent(api, name)
    starting = later(1.0, lambda: api.post(f"/agents/{name}/start"))
    began = time.monotonic()
    reply = post(stack, name, "/held", data=b"held-body", headers={"Prefer": "wait=20"})
    assert reply.status_code == 200, reply.text
    assert time.monotonic() - began >= 1.0
    assert reply.headers["Preference-Applied"] == "wait=20"
    assert reply.json()["body"] == "held-body"
    assert starting.result().status_code == 200
    rid = reply.headers["X-Agentainer-Request-Id"]
    stored = wait_for_status(api, name, rid, "completed")
    assert stored["attempts"] == 1


def test_a_hold_that_runs_out_is_a_202_and_the_request_stays_queued(stack: Stack, api: Api,
                                                                    name: str):
    stopped_agent(api, name)
    began = time.monotonic()
    reply = post(stack, name, "/late", headers={"Prefer": "wait=1"})
    assert reply.status_code == 202, reply.text
    assert 1.0 <= time.monotonic() - began < 5
    assert reply.headers["Preference-Applied"] == "wait=1"
    assert "held 1 s" in reply.json()["message"]
    rid = reply.json()["data"]["request_id"]
    assert reply.headers["Location"] == f"/agents/{agent_id(api, name)}/requests/{rid}"
    assert api.post(f"/agents/{name}/start").status_code == 200
    wait_for_status(api, name, rid, "completed")


def test_respond_async_is_a_202_at_once(stack: Stack, api: Api, name: str):
    stopped_agent(api, name, hold="20s")
    began = time.monotonic()
    reply = post(stack, name, "/async", headers={"Prefer": "respond-async"})
    assert reply.status_code == 202 and time.monotonic() - began < 1
    assert reply.headers["Preference-Applied"] == "respond-async"


def test_the_agents_hold_applies_without_prefer_but_not_to_a_user_stop(stack: Stack, api: Api,
                                                                       name: str):
    started(api, name, hold="20s")
    assert api.get(f"/agents/{name}").json()["data"]["hold"] == 20
    # NOTE: a user's stop: nothing will start it, so the default hold does not wait
    assert api.post(f"/agents/{name}/stop").status_code == 200
    began = time.monotonic()
    assert post(stack, name, "/stopped").status_code == 202
    assert time.monotonic() - began < 1
    assert api.post(f"/agents/{name}/start").status_code == 200
    wait_for(lambda: post(stack, name, "/up").status_code == 200, timeout=30,
             message="the agent up again")
    # NOTE: a crash: no monitor runs in this stack, the test starts the agent again instead
    docker.from_env().containers.get(f"agentainer-{agent_id(api, name)}").kill()
    starting = later(1.0, lambda: api.post(f"/agents/{name}/start"))
    reply = post(stack, name, "/crashed")
    assert reply.status_code == 200, reply.text
    assert "Preference-Applied" not in reply.headers
    starting.result()


def test_held_streams_come_as_they_stream_in_queue_order(stack: Stack, api: Api, name: str,
                                                         tmp_path):
    stopped_agent(api, name, image="agentainer/stream-agent:latest")
    chat = {"model": "m", "stream": True, "tokens": 5, "token_delay": 0.3,
            "messages": [{"role": "user", "content": "hi"}]}

    def held(n: int) -> tuple[float, float, bytes]:
        with requests.post(f"{stack.url}/agent/{name}/v1/chat/completions", json=chat,
                           headers={"Prefer": "wait=30", "X-Client-Seq": str(n)}, stream=True,
                           timeout=60) as reply:
            assert reply.status_code == 200, reply.text
            chunks = reply.iter_content(None)
            first = next(chunks)
            at_first = time.monotonic()
            rest = b"".join(chunks)
            return at_first, time.monotonic(), first + rest

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        calls = []
        for n in range(3):
            calls.append(pool.submit(held, n))
            time.sleep(0.3)  # NOTE: arrival order 0, 1, 2
        api.post(f"/agents/{name}/start")
        results = [call.result() for call in calls]
    for at_first, at_end, body in results:
        assert at_end - at_first > 0.8  # NOTE: the first token came well before the last
        assert body.count(b"data: ") == 7 and body.rstrip().endswith(b"data: [DONE]")
    firsts = [at_first for at_first, _, _ in results]
    assert firsts == sorted(firsts)  # NOTE: delivered in the queue's order


def test_a_held_caller_that_leaves_or_a_dead_server_loses_nothing(stack: Stack, api: Api,
                                                                  name: str):
    stopped_agent(api, name)
    host, port = stack.url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /agent/{name}/left HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Prefer: wait=30\r\nContent-Length: 0\r\n\r\n".encode())
        time.sleep(0.5)
    held = post(stack, name, "/orphan", headers={"Prefer": "respond-async"})
    rid = held.json()["data"]["request_id"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        dying = pool.submit(post, stack, name, "/server-dies", headers={"Prefer": "wait=30"})
        time.sleep(0.5)
        stack.kill_server()
        try:
            dying.result()
        except requests.RequestException:
            pass
    stack.start_server()
    assert Api(stack.url, stack.token).post(f"/agents/{name}/start").status_code == 200
    api = Api(stack.url, stack.token)
    wait_for_status(api, name, rid, "completed")
    records = {r["path"]: r for r in api.get(f"/agents/{name}/requests",
                                             params={"limit": 50}).json()["data"]["requests"]}
    for path in ("/left", "/orphan", "/server-dies"):
        assert wait_for_status(api, name, records[path]["id"], "completed")["attempts"] == 1
