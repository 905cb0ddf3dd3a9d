"""Every row of the lifecycle table (DESIGN §3), through the real server and Docker."""

import threading

import docker
import redis
import pytest

from tests.helpers import wait_for
from tests.stack import Api


def container_of(docker_client: docker.DockerClient, agent_id: str):
    return docker_client.containers.get(f"agentainer-{agent_id}")


def containers_labelled(docker_client: docker.DockerClient, agent_id: str) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"agentainer.id={agent_id}"})


def op(api: Api, ref: str, verb: str):
    return api.post(f"/agents/{ref}/{verb}")


@pytest.fixture
def running(api: Api, name: str, docker_client: docker.DockerClient) -> dict:
    """A started echo agent whose app is listening (its SIGTERM handler is installed)."""
    agent = api.deploy(name, start=True)
    container = container_of(docker_client, agent["id"])
    wait_for(lambda: b"listening" in container.logs(), timeout=15, message="the app to listen")
    return agent


def test_deploy_creates_a_container_without_starting_it(api, name, docker_client):
    agent = api.deploy(name)
    assert agent["status"] == "created"
    assert agent["id"].startswith("agent-") and len(agent["id"]) == 18
    assert container_of(docker_client, agent["id"]).status == "created"


def test_deploy_with_start_runs_it(api, name, docker_client):
    agent = api.deploy(name, start=True)
    assert agent["status"] == "running"
    assert container_of(docker_client, agent["id"]).status == "running"


@pytest.mark.parametrize("setup", ["created", "stopped", "failed"])
def test_start_from(api, name, setup, docker_client, redis_url):
    agent = api.deploy(name, start=setup != "created")
    if setup != "created":
        assert op(api, name, "stop").status_code == 200
    if setup == "failed":
        redis.Redis.from_url(redis_url).hset(f"agentainer:agent:{agent['id']}", "status", "failed")
        assert api.status(name) == "failed"
    reply = op(api, name, "start")
    assert reply.status_code == 200, reply.text
    assert reply.json()["data"]["status"] == "running"
    assert container_of(docker_client, agent["id"]).status == "running"


def test_start_running_is_a_no_op(api, running, name, docker_client):
    before = container_of(docker_client, running["id"]).attrs["State"]["StartedAt"]
    assert op(api, name, "start").status_code == 200
    assert container_of(docker_client, running["id"]).attrs["State"]["StartedAt"] == before


def test_start_paused_says_use_resume(api, running, name):
    assert op(api, name, "pause").status_code == 200
    reply = op(api, name, "start")
    assert reply.status_code == 409
    assert reply.json()["error"] == "invalid_state"
    assert "resume" in reply.json()["message"]


@pytest.mark.parametrize("setup", ["running", "paused"])
def test_stop_from(api, running, name, setup, docker_client):
    if setup == "paused":
        assert op(api, name, "pause").status_code == 200
    reply = op(api, name, "stop")
    assert reply.status_code == 200, reply.text
    assert reply.json()["data"]["status"] == "stopped"
    container = container_of(docker_client, running["id"])
    assert container.status == "exited"
    assert container.attrs["State"]["ExitCode"] == 0  # SIGTERM honoured, not SIGKILLed


@pytest.mark.parametrize("start", [False, True])
def test_stop_when_not_running_is_a_no_op(api, name, start):
    api.deploy(name, start=start)
    if start:
        assert op(api, name, "stop").status_code == 200
    reply = op(api, name, "stop")
    assert reply.status_code == 200
    assert reply.json()["data"]["status"] in ("created", "stopped")


def test_restart_running(api, running, name, docker_client):
    before = container_of(docker_client, running["id"]).attrs["State"]["StartedAt"]
    reply = op(api, name, "restart")
    assert reply.status_code == 200
    assert reply.json()["data"]["status"] == "running"
    assert container_of(docker_client, running["id"]).attrs["State"]["StartedAt"] != before


@pytest.mark.parametrize("setup", ["created", "stopped", "paused"])
def test_restart_not_running_conflicts(api, name, setup):
    api.deploy(name, start=setup != "created")
    if setup != "created":
        assert op(api, name, "pause" if setup == "paused" else "stop").status_code == 200
    reply = op(api, name, "restart")
    assert reply.status_code == 409
    assert "resume or start" in reply.json()["message"]


def test_pause_running_freezes_it(api, running, name, docker_client):
    reply = op(api, name, "pause")
    assert reply.status_code == 200
    assert reply.json()["data"]["status"] == "paused"
    assert container_of(docker_client, running["id"]).status == "paused"


@pytest.mark.parametrize("start", [False, True])
def test_pause_not_running_conflicts(api, name, start):
    api.deploy(name, start=start)
    if start:
        assert op(api, name, "stop").status_code == 200
    assert op(api, name, "pause").status_code == 409


@pytest.mark.parametrize("setup", ["paused", "created", "stopped"])
def test_resume_from(api, name, setup, docker_client):
    agent = api.deploy(name, start=setup != "created")
    if setup != "created":
        assert op(api, name, "pause" if setup == "paused" else "stop").status_code == 200
    reply = op(api, name, "resume")
    assert reply.status_code == 200, reply.text
    assert reply.json()["data"]["status"] == "running"
    assert container_of(docker_client, agent["id"]).status == "running"


def test_resume_running_is_a_no_op(api, running, name):
    assert op(api, name, "resume").status_code == 200
    assert api.status(name) == "running"


def test_resume_recreates_a_container_removed_behind_our_back(api, running, name, docker_client):
    container_of(docker_client, running["id"]).remove(force=True)
    assert api.status(name) == "stopped"
    reply = op(api, name, "resume")
    assert reply.status_code == 200, reply.text
    fresh = container_of(docker_client, running["id"])
    assert fresh.status == "running"
    assert fresh.id != running["container_id"]
    assert len(containers_labelled(docker_client, running["id"])) == 1
    assert api.get(f"/agents/{name}").json()["data"]["container_id"] == fresh.id


@pytest.mark.parametrize("start", [False, True])
def test_remove_deletes_container_and_record(api, name, start, docker_client):
    agent = api.deploy(name, start=start)
    reply = api.delete(f"/agents/{name}")
    assert reply.status_code == 200
    assert containers_labelled(docker_client, agent["id"]) == []
    assert api.get(f"/agents/{agent['id']}").status_code == 404
    assert api.get(f"/agents/{name}").status_code == 404
    api.deploy(name)  # the name is free again


def test_remove_unknown_is_404(api):
    reply = api.delete("/agents/no-such-agent")
    assert reply.status_code == 404
    assert reply.json()["error"] == "agent_not_found"


@pytest.mark.parametrize("verb", ["start", "stop", "restart", "pause", "resume"])
def test_lifecycle_of_unknown_agent_is_404(api, verb):
    assert op(api, "agent-000000000000", verb).status_code == 404
    assert op(api, "nobody", verb).status_code == 404


def test_every_route_takes_id_or_name(api, running, name):
    for ref in (running["id"], name):
        reply = api.get(f"/agents/{ref}")
        assert reply.status_code == 200
        assert reply.json()["data"]["id"] == running["id"]


def test_two_concurrent_starts_leave_exactly_one_container(api, name, docker_client):
    agent = api.deploy(name)
    docker_client.containers.get(f"agentainer-{agent['id']}").remove(force=True)
    barrier = threading.Barrier(2)
    replies = []

    def start():
        barrier.wait()
        replies.append(op(api, name, "start"))

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(r.status_code for r in replies) == [200, 200]
    assert len(containers_labelled(docker_client, agent["id"])) == 1
    assert api.status(name) == "running"


def test_status_follows_docker_when_the_container_dies(api, running, name, docker_client):
    container_of(docker_client, running["id"]).kill()
    wait_for(lambda: api.status(name) == "stopped", timeout=15, message="status stopped")


@pytest.mark.parametrize("verb", ["start", "stop", "restart", "pause", "resume"])
def test_lifecycle_body_with_fields_is_400_and_changes_nothing(api, name, verb):
    api.deploy(name, start=verb in ("stop", "restart", "pause"))
    before = api.status(name)
    reply = api.post(f"/agents/{name}/{verb}", json={"force": True})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"] == "invalid_input" and "force" in reply.json()["message"]
    assert api.status(name) == before


@pytest.mark.parametrize("body", [{"data": ""}, {"json": {}},
                                  {"data": "", "headers": {"Content-Type": "text/plain"}}])
def test_lifecycle_takes_no_body_or_an_empty_object(api, name, body):
    api.deploy(name)
    reply = api.post(f"/agents/{name}/start", **body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["data"]["status"] == "running"


def test_remove_body_with_fields_is_400_and_keeps_the_agent(api, name):
    api.deploy(name)
    reply = api.delete(f"/agents/{name}", json={"force": True})
    assert reply.status_code == 400, reply.text
    assert "force" in reply.json()["message"]
    assert api.get(f"/agents/{name}").status_code == 200
    assert api.delete(f"/agents/{name}", json={}).status_code == 200
    assert api.get(f"/agents/{name}").status_code == 404
