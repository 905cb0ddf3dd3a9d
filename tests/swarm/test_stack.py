"""Agentainer on a real swarm: its control plane is the stack ``make swarm-up`` deployed
(API on 127.0.0.1:8091) and each agent a Swarm service."""

import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import requests

from tests.swarm.conftest import (
    URL, Api, docker, running_tasks, service_of, task_container, wait_for,
)

CLI = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "agentainer"


def proxied(api: Api, ref: str, path: str = "/", **options) -> requests.Response:
    options.setdefault("timeout", 60)
    return requests.post(f"{api.url}/agent/{ref}{path}", **options)


def started(api: Api, agents: list[str], **fields) -> dict:
    agent = api.deploy(start=True, **fields)
    agents.append(agent["id"])
    wait_for(lambda: requests.get(f"{api.url}/agent/{agent['id']}/health", timeout=10).ok,
             timeout=60, what=f"{agent['name']} to answer")
    return agent


def settled(api: Api, agent_id: str, request_id: str, *, timeout: float = 90) -> dict:
    def terminal():
        record = api.get(f"/agents/{agent_id}/requests/{request_id}").json()["data"]
        return record if record["status"] in ("completed", "failed", "cancelled") else None
    return wait_for(terminal, timeout=timeout, what=f"{request_id} to end")


def test_an_agent_is_a_service_through_its_lifecycle(api: Api, agents: list[str]):
    agent = api.deploy()
    agents.append(agent["id"])
    service = service_of(agent["id"])
    spec = service["Spec"]
    assert spec["Mode"]["Replicated"]["Replicas"] == 0
    assert spec["EndpointSpec"]["Mode"] == "dnsrr"
    assert spec["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"
    assert "Ports" not in spec["EndpointSpec"]
    assert spec["TaskTemplate"]["ContainerSpec"]["Labels"]["agentainer.id"] == agent["id"]
    networks = {n["Target"] for n in spec["TaskTemplate"]["Networks"]}
    assert networks == {docker("network", "inspect", "-f", "{{.Id}}", "agentainer-swarm-net")}

    assert api.post(f"/agents/{agent['id']}/start").json()["data"]["status"] == "running"
    first = wait_for(lambda: running_tasks(agent["id"]), timeout=30, what="a running task")
    reply = proxied(api, agent["name"], "/hello", data=b"hi")
    assert reply.status_code == 200 and reply.json()["body"] == "hi"

    assert api.post(f"/agents/{agent['id']}/restart").json()["data"]["status"] == "running"
    again = wait_for(lambda: running_tasks(agent["id"]), timeout=30, what="a running task")
    assert set(again).isdisjoint(first)  # NOTE: a forced update replaced the task
    assert service_of(agent["id"])["Spec"]["TaskTemplate"]["ForceUpdate"] >= 2

    paused = api.post(f"/agents/{agent['id']}/pause")
    assert (paused.status_code, paused.json()["error"]) == (409, "pause_unsupported")
    assert api.post(f"/agents/{agent['id']}/stop").json()["data"]["status"] == "stopped"
    assert service_of(agent["id"])["Spec"]["Mode"]["Replicated"]["Replicas"] == 0
    assert running_tasks(agent["id"]) == []

    assert api.delete(f"/agents/{agent['id']}").status_code == 200
    agents.remove(agent["id"])
    assert docker("service", "ls", "-q", "--filter", f"label=agentainer.id={agent['id']}") == ""


def test_replicas_are_tasks_the_proxy_spreads_requests_over(api: Api, agents: list[str]):
    agent = started(api, agents, replicas=2, persist=False)
    tasks = wait_for(lambda: len(found := running_tasks(agent["id"])) == 2 and found,
                     timeout=30, what="two tasks")
    # NOTE: a kept-alive upstream connection sticks to one task; concurrent ones spread.
    # A task Swarm calls running may not listen yet, and DNS may hand one batch one task:
    # a batch counts once all 16 are answered by both
    for _ in range(10):
        path, statuses = f"/spread-{uuid.uuid4().hex[:8]}", []
        threads = [threading.Thread(target=lambda: statuses.append(proxied(
            api, agent["id"], path, headers={"X-Echo-Delay": "0.5"}).status_code))
            for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        served = [docker("logs", task_container(task)[0]).count(path) for task in tasks]
        if statuses == [200] * 16 and all(served):
            break
        time.sleep(1)
    assert statuses == [200] * 16, statuses
    assert sum(served) == 16 and all(served), served


def test_an_sse_stream_is_relayed_token_by_token(api: Api, agents: list[str]):
    agent = started(api, agents, image="agentainer/stream-agent:latest")
    body = {"model": "m", "stream": True, "tokens": 5, "token_delay": 0.2,
            "messages": [{"role": "user", "content": "x"}]}
    arrivals = []
    with requests.post(f"{api.url}/agent/{agent['id']}/v1/chat/completions", json=body,
                       stream=True, timeout=60) as reply:
        assert reply.status_code == 200
        assert reply.headers["Content-Type"].startswith("text/event-stream")
        for line in reply.iter_lines():
            if line.startswith(b"data: "):
                arrivals.append((time.monotonic(), line))
    assert arrivals[-1][1] == b"data: [DONE]"
    tokens = [at for at, line in arrivals if b"tok" in line]
    assert len(tokens) == 5
    assert tokens[-1] - tokens[0] > 0.6  # NOTE: streamed as produced, not buffered


def test_requests_queue_while_scaled_to_zero_and_replay_on_start(api: Api, agents: list[str]):
    agent = started(api, agents, hold="0s")
    assert api.post(f"/agents/{agent['id']}/stop").status_code == 200
    ids = []
    for n in range(3):
        reply = proxied(api, agent["id"], f"/queued/{n}", data=f"body-{n}".encode())
        assert reply.status_code == 202, reply.text
        ids.append(reply.json()["data"]["request_id"])
    assert api.post(f"/agents/{agent['id']}/start").status_code == 200
    records = [settled(api, agent["id"], request_id) for request_id in ids]
    assert [r["status"] for r in records] == ["completed"] * 3
    answers = [api.get(f"/agents/{agent['id']}/requests/{rid}/response").json()
               for rid in ids]
    assert [a["path"] for a in answers] == ["/queued/0", "/queued/1", "/queued/2"]


def test_a_killed_task_is_restarted_by_agentainer_not_by_swarm(api: Api, agents: list[str]):
    agent = started(api, agents, auto_restart=True)
    [task] = running_tasks(agent["id"])
    container, _ = task_container(task)
    docker("kill", container)
    back = wait_for(lambda: [t for t in running_tasks(agent["id"]) if t != task],
                    timeout=60, what="Agentainer to restart the agent")
    assert back
    record = wait_for(lambda: (a := api.agent(agent["id"]))["restarts"] >= 1 and a,
                      timeout=30, what="the restart to be recorded")
    assert record["status"] == "running"
    assert proxied(api, agent["id"], "/after").status_code == 200


def test_a_crashed_agent_without_auto_restart_stays_down(api: Api, agents: list[str]):
    agent = started(api, agents)
    [task] = running_tasks(agent["id"])
    docker("kill", task_container(task)[0])
    wait_for(lambda: api.agent(agent["id"])["status"] == "stopped", timeout=30,
             what="the agent to read stopped")
    time.sleep(3)
    assert running_tasks(agent["id"]) == []  # NOTE: Swarm did not restart it either


def server_containers() -> list[str]:
    return docker("ps", "-q", "--filter", "label=com.docker.swarm.service.name=agentainer_server"
                  ).split()


def test_a_server_killed_mid_request_leaves_it_in_one_terminal_state(api: Api,
                                                                      agents: list[str]):
    agent = started(api, agents)
    key = f"kill-{uuid.uuid4().hex[:8]}"
    outcome: dict = {}

    def call() -> None:
        try:
            outcome["reply"] = proxied(api, agent["id"], "/slow", data=b"once",
                                       headers={"X-Echo-Delay": "4", "Idempotency-Key": key})
        except requests.RequestException as ex:
            outcome["error"] = ex

    caller = threading.Thread(target=call)
    caller.start()
    in_flight = wait_for(lambda: [r for r in api.get(
        f"/agents/{agent['id']}/requests", params={"status": "in_flight"}).json()["data"][
        "requests"]], timeout=10, what="the request to be in flight")
    [server] = server_containers()
    docker("kill", server)
    caller.join(60)
    assert "error" in outcome or outcome["reply"].status_code >= 500
    wait_for(lambda: requests.get(URL + "/health", timeout=3).ok and server_containers()
             and server_containers() != [server], timeout=90, what="Swarm to replace the server")
    record = settled(api, agent["id"], in_flight[0]["id"], timeout=120)
    assert record["status"] == "completed"
    again = api.get(f"/agents/{agent['id']}/requests/{record['id']}").json()["data"]
    assert again["status"] == "completed"


def test_the_cli_drives_the_stack(api: Api, agents: list[str]):
    env = {**os.environ, "AGENTAINER_URL": URL, "AGENTAINER_TOKEN": api.token}
    name = f"cli-{uuid.uuid4().hex[:8]}"

    def cli(*args: str) -> str:
        done = subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    cli("deploy", "--name", name, "--image", "agentainer/echo-agent:latest")
    agents.append(api.agent(name)["id"])
    cli("start", name)
    listed = json.loads(cli("list", "--json"))
    assert any(a["name"] == name and a["status"] == "running" for a in listed)
    wait_for(lambda: proxied(api, name, "/via-cli").ok, timeout=30, what="the agent to answer")
    assert cli("logs", name, "--tail", "5").count("/via-cli") >= 1
    cli("stop", name)
    paused = subprocess.run([str(CLI), "pause", name], capture_output=True, text=True, env=env,
                            timeout=60)
    assert paused.returncode != 0 and "pause" in paused.stderr.lower()
    cli("remove", name)
    agents.clear()
