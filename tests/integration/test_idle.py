"""The idle rule through the real server, workers, monitor and Docker: an agent with no
request for its idle_timeout is stopped or paused, and a request wakes it."""

import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from tests.helpers import wait_for
from tests.stack import Api, Stack, run_cli

IDLE = "2s"


@pytest.fixture(scope="module", autouse=True)
def monitor(stack: Stack) -> Iterator[subprocess.Popen]:
    """The monitor, which applies the idle rule (the session's stack runs none)."""
    process = stack._spawn("agentainer-monitor", "monitor.log")
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def agent_view(api: Api, ref: str) -> dict:
    return api.get(f"/agents/{ref}").json()["data"]


def wait_status(api: Api, ref: str, status: str, *, idle: bool, timeout: float = 20) -> None:
    wait_for(lambda: (lambda a: a["status"] == status and a["idle"] is idle)(
        agent_view(api, ref)), timeout=timeout, message=f"{ref} {status} (idle {idle})")


def record(api: Api, agent_id: str, request_id: str) -> dict:
    return api.get(f"/agents/{agent_id}/requests/{request_id}").json()["data"]


def send(api: Api, ref: str, **headers: str):
    return api.post(f"/agent/{ref}/hello", data=b"hi", headers=headers)


def woken_lines(stack: Stack, agent_id: str) -> int:
    return (stack.data_dir / "server.log").read_text(errors="replace").count(
        f"agent {agent_id}: woken by a request (was stopped)")


@pytest.mark.parametrize("action, status", [("stop", "stopped"), ("pause", "paused")])
def test_an_idle_agent_goes_down_and_a_request_wakes_it(stack, api, name, action, status):
    agent = api.deploy(name, start=True, idle_timeout=IDLE, idle_action=action)
    assert agent["idle_timeout"] == 2.0 and agent["idle_action"] == action
    wait_status(api, name, status, idle=True)
    listed = run_cli(stack, "list", "--name", name)
    assert f"{status} (idle)" in listed.stdout, listed.stdout + listed.stderr
    assert agent_view(api, name)["desired"] == status
    reply = send(api, name)
    # NOTE: without hold the request is queued (202) and the drain delivers it once woken
    assert reply.status_code in (200, 202), reply.text
    request_id = reply.headers["X-Agentainer-Request-Id"]
    wait_for(lambda: record(api, agent["id"], request_id)["status"] == "completed",
             timeout=30, message="the request delivered after the wake")
    view = agent_view(api, name)
    assert view["status"] == "running" and view["idle"] is False
    assert view["desired"] == "running"


def test_a_request_in_flight_keeps_the_agent_running(api, name):
    api.deploy(name, start=True, idle_timeout=IDLE)
    slow = threading.Thread(target=send, args=(api, name), kwargs={"X-Echo-Delay": "4.5"})
    slow.start()
    try:
        time.sleep(4)  # NOTE: twice the idle timeout, the request still in flight
        assert agent_view(api, name)["status"] == "running"
    finally:
        slow.join(timeout=30)
    wait_status(api, name, "stopped", idle=True)  # NOTE: counted from its answer


def test_a_users_stop_is_not_woken(api, name):
    agent = api.deploy(name, start=True, idle_timeout=IDLE, idle_action="pause")
    wait_status(api, name, "paused", idle=True)
    assert api.post(f"/agents/{name}/stop").status_code == 200
    assert agent_view(api, name)["idle"] is False
    reply = send(api, name)
    assert reply.status_code == 202, reply.text
    time.sleep(3)
    assert agent_view(api, name)["status"] == "stopped"
    assert record(api, agent["id"], reply.headers["X-Agentainer-Request-Id"])["status"] == "queued"
    assert api.post(f"/agents/{name}/start").status_code == 200  # NOTE: a normal start
    wait_for(lambda: record(api, agent["id"], reply.headers["X-Agentainer-Request-Id"])[
        "status"] == "completed", timeout=30, message="the queued request delivered")


def test_a_burst_to_an_idle_agent_wakes_it_once(stack, api, name):
    agent = api.deploy(name, start=True, idle_timeout=IDLE)
    wait_status(api, name, "stopped", idle=True)
    replies: list = []
    threads = [threading.Thread(target=lambda: replies.append(send(api, name)))
               for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(replies) == 20 and all(r.status_code in (200, 202) for r in replies)
    for reply in replies:
        request_id = reply.headers["X-Agentainer-Request-Id"]
        wait_for(lambda: record(api, agent["id"], request_id)["status"] == "completed",
                 timeout=30, message="every request of the burst delivered")
    assert woken_lines(stack, agent["id"]) == 1
    assert agent_view(api, name)["status"] == "running"


def test_idle_needs_persistence(api, name):
    reply = api.post("/agents", json={"name": name, "image": "agentainer/echo-agent:latest",
                                      "idle_timeout": "1m", "persist": False})
    assert reply.status_code == 409 and reply.json()["error"] == "idle_needs_persist"
