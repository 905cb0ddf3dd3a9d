"""Requests to an agent that cannot take them are queued and replayed in order (make test-persistence)."""

import io
import tarfile

import docker
import pytest
import requests

from tests.helpers import wait_for
from tests.stack import ECHO_IMAGE, Api, Stack, run_cli
from tests.integration.journal_helpers import (
    all_records, record, served_paths, started, wait_for_status, worker_log_lines,
)

# The echo agent, plus a knob: after answering a request with `X-Gate-Close: <seconds>`, the
# app refuses connections for that long while its container keeps running.
GATE_APP = """
import os, signal, sys, threading, time
sys.path.insert(0, "/app")
import app as echo

closed_for = []

class Gate(echo.EchoHandler):
    def dispatch(self):
        pause = self.headers.get("X-Gate-Close")
        if pause:
            closed_for.append(float(pause))
            self.server.shutdown()
            self.server.socket.close()
            self.close_connection = True
        super().dispatch()

for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda *_: sys.exit(0))
port = int(os.environ.get("PORT") or 8000)
while True:
    server = echo.BurstServer(("0.0.0.0", port), Gate)
    server.daemon_threads = True
    echo.log(f"listening on 0.0.0.0:{port}")
    server.serve_forever()
    server.server_close()
    time.sleep(closed_for.pop() if closed_for else 0)
"""


def send(stack: Stack, ref: str, path: str, **kwargs) -> requests.Response:
    return requests.post(f"{stack.url}/agent/{ref}{path}", timeout=30, **kwargs)


def queue_three(stack: Stack, name: str) -> list[str]:
    ids = []
    for n in range(3):
        reply = send(stack, name, f"/job/{n}", data=f"body-{n}".encode())
        assert reply.status_code == 202, reply.text
        data = reply.json()["data"]
        assert data["status"] == "queued" and data["position"] == n + 1
        assert reply.headers["Location"].endswith(f"/requests/{data['request_id']}")
        assert reply.headers["X-Agentainer-Request-Id"] == data["request_id"]
        ids.append(data["request_id"])
    return ids


def assert_delivered_in_order(api: Api, name: str, ids: list[str],
                              docker_client: docker.DockerClient) -> None:
    finished = [wait_for_status(api, name, rid, "completed") for rid in ids]
    assert [r["updated_at"] for r in finished] == sorted(r["updated_at"] for r in finished)
    for n, stored in enumerate(finished):
        assert stored["attempts"] == 1 and stored["resp_status"] == 200
        assert f"body-{n}" in stored["resp_body"]
    agent_id = api.get(f"/agents/{name}").json()["data"]["id"]
    logs = docker_client.containers.get(f"agentainer-{agent_id}").logs().decode()
    served = [line.split()[1] for line in logs.splitlines() if line.startswith("POST /job/")]
    assert served == ["/job/0", "/job/1", "/job/2"]  # each exactly once, in arrival order


@pytest.mark.parametrize("state", ["created", "stopped", "paused"])
def test_queued_then_replayed_in_order(stack: Stack, api: Api, name: str, state: str,
                                       docker_client):
    if state == "created":
        api.deploy(name)
    else:
        started(api, name)
        assert api.post(f"/agents/{name}/{'stop' if state == 'stopped' else 'pause'}"
                        ).status_code == 200
    ids = queue_three(stack, name)
    assert [r["status"] for r in all_records(api, name) if r["id"] in ids] == ["queued"] * 3
    assert api.post(f"/agents/{name}/{'start' if state == 'created' else 'resume'}"
                    ).status_code == 200
    assert_delivered_in_order(api, name, ids, docker_client)


def test_connection_refused_counts_as_not_running(stack: Stack, api: Api, name: str):
    """The app is not listening yet: the request is queued, then delivered."""
    api.deploy(name, start=True, env_vars={"ECHO_STARTUP_DELAY": "3"})
    reply = send(stack, name, "/early", data=b"early")
    assert reply.status_code == 202, reply.text
    stored = wait_for_status(api, name, reply.json()["data"]["request_id"], "completed")
    assert stored["attempts"] == 1


def test_cancel_and_replay(stack: Stack, api: Api, name: str):
    api.deploy(name)
    first, second, third = queue_three(stack, name)
    for method in (api.delete, api.post):  # NOTE: cancel and replay take no body fields
        path = f"/agents/{name}/requests/{second}" + ("/replay" if method == api.post else "")
        refused = method(path, json={"force": True})
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid_input")
    assert record(api, name, second)["status"] == "queued"
    assert api.delete(f"/agents/{name}/requests/{second}").status_code == 200
    assert record(api, name, second)["status"] == "cancelled"
    assert api.delete(f"/agents/{name}/requests/{second}").status_code == 409
    cancelled = run_cli(stack, "requests", "cancel", name, third)
    assert cancelled.returncode == 0, cancelled.stderr
    assert api.post(f"/agents/{name}/start").status_code == 200
    wait_for_status(api, name, first, "completed")
    assert record(api, name, second)["status"] == "cancelled"
    replayed = run_cli(stack, "requests", "replay", name, second)
    assert replayed.returncode == 0, replayed.stderr
    assert wait_for_status(api, name, second, "completed")["resp_status"] == 200


def test_dead_letter_after_max_attempts_then_replay(stack: Stack, api: Api, name: str):
    """An agent that never answers in time: 3 attempts (the test stack's max), then failed."""
    started(api, name)
    reply = send(stack, name, "/hang", headers={"X-Echo-Delay": "30"})
    assert reply.status_code == 504, reply.text
    request_id = reply.headers["X-Agentainer-Request-Id"]
    assert reply.json()["data"]["request_id"] == request_id
    failed = wait_for_status(api, name, request_id, "failed", timeout=90)
    assert failed["attempts"] == 3 and "did not answer" in failed["error"]
    assert request_id in [r["id"] for r in api.get(
        f"/agents/{name}/requests", params={"status": "failed"}).json()["data"]["requests"]]
    assert api.post(f"/agents/{name}/requests/{request_id}/replay").status_code == 200
    assert record(api, name, request_id)["status"] in ("queued", "in_flight")


def test_queue_limit_is_503(stack: Stack, api: Api, name: str):
    api.deploy(name)
    for _ in range(50):
        assert send(stack, name, "/fill").status_code == 202
    full = send(stack, name, "/over")
    assert full.status_code == 503 and full.json()["error"] == "queue_full"
    assert full.headers["Retry-After"]
    assert api.get(f"/agents/{name}/requests", params={"status": "queued"}
                   ).json()["data"]["total"] == 50


def test_every_request_ends_in_one_terminal_state(stack: Stack, api: Api, name: str):
    api.deploy(name)
    ids = [send(stack, name, f"/n/{n}").json()["data"]["request_id"] for n in range(20)]
    assert api.post(f"/agents/{name}/start").status_code == 200
    wait_for(lambda: all(record(api, name, rid)["status"] == "completed" for rid in ids),
             timeout=60, message="20 replays")
    assert sorted(r["id"] for r in all_records(api, name)) == sorted(ids)


@pytest.fixture(scope="module")
def gate_image(docker_client: docker.DockerClient, stack: Stack):
    """Build (offline, from the echo agent's image) the image of GATE_APP."""
    tag = f"{stack.prefix}-gate:latest"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text in (("Dockerfile", f"FROM {ECHO_IMAGE}\nCOPY gate.py /app/gate.py\n"
                                          'CMD ["python3", "/app/gate.py"]\n'),
                           ("gate.py", GATE_APP)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    docker_client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True,
                               forcerm=True)  # NOTE: no intermediate containers left
    yield tag
    docker_client.images.remove(tag, force=True)


def test_fifo_kept_when_the_app_refuses_connections_mid_drain(stack: Stack, api: Api, name: str,
                                                              docker_client, gate_image: str):
    """The request leased while the app refuses connections goes back to the front."""
    agent = api.deploy(name, image=gate_image)
    ids = [send(stack, name, "/close", headers={"X-Gate-Close": "3"}).json()["data"]
           ["request_id"]]
    ids += [send(stack, name, f"/after/{n}").json()["data"]["request_id"] for n in range(2)]
    assert api.post(f"/agents/{name}/start").status_code == 200
    done = [wait_for_status(api, name, rid, "completed") for rid in ids]
    assert served_paths(docker_client, agent["id"]) == ["/close", "/after/0", "/after/1"]
    assert done[1]["updated_at"] - done[0]["updated_at"] >= 2500  # it waited for the app
    assert done[1]["attempts"] <= 2 and done[2]["attempts"] == 1


def test_a_long_queue_is_drained_in_slices_in_order(stack: Stack, api: Api, name: str,
                                                    docker_client):
    """12 s of deliveries: a drain job hands over to a fresh one after its 10 s slice."""
    agent = api.deploy(name)
    ids = [send(stack, name, f"/slow/{n}", headers={"X-Echo-Delay": "1.5"}).json()["data"]
           ["request_id"] for n in range(8)]
    assert api.post(f"/agents/{name}/start").status_code == 200
    done = [wait_for_status(api, name, rid, "completed", timeout=90) for rid in ids]
    assert all(r["attempts"] == 1 for r in done)
    assert served_paths(docker_client, agent["id"]) == [f"/slow/{n}" for n in range(8)]
    assert worker_log_lines(stack, f"agent {agent['id']}: time slice used")
