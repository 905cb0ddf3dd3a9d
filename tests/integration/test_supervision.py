"""The supervised stack: supervisord, the monitor, auto-restart, reconciliation, metrics.

Runs the repository's own supervisord.conf (with HOME and AGENTAINER_* settings of its own)
with all four programs, and drives it with the real CLI and HTTP.
"""

import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator

import docker
import redis
import pytest
import requests

from agentainer.monitor.reconcile import ORPHAN_GRACE
from tests.helpers import wait_for
from tests.stack import ECHO_IMAGE, STATEFUL_IMAGE, TEST_SETTINGS, _clean_docker
from tests.integration.journal_helpers import all_records, wait_for_status
from tests.integration.supervised import Supervised


@pytest.fixture(scope="module")
def supervised(docker_client: docker.DockerClient, tmp_path_factory) -> Iterator[Supervised]:
    stack = Supervised.create(tmp_path_factory.mktemp("home"), {
        **TEST_SETTINGS, "AGENTAINER_RESTART_BASE": "500ms", "AGENTAINER_RESTART_CAP": "8s",
        "AGENTAINER_RESTART_LIMIT": "4", "AGENTAINER_RECONCILE_INTERVAL": "2s",
        "AGENTAINER_METRICS_INTERVAL": "1s"})
    stack.start()
    try:
        yield stack
    finally:
        stack.shutdown()
        _clean_docker(docker_client, stack.prefix, stack.redis_url, only_prefix=True)


@pytest.fixture
def agent_name(supervised: Supervised) -> str:
    return f"{supervised.prefix}-{secrets.token_hex(3)}"


def deployed(stack: Supervised, name: str, *flags: str) -> dict:
    result = stack.cli("deploy", "--name", name, "--json", *flags)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def container(docker_client: docker.DockerClient, agent: dict):
    return docker_client.containers.get(f"agentainer-{agent['id']}")


def test_killed_auto_restart_agent_comes_back(supervised, agent_name, docker_client):
    agent = deployed(supervised, agent_name, "--image", ECHO_IMAGE, "--auto-restart", "--start")
    wait_for(lambda: b"listening" in container(docker_client, agent).logs(), message="app")
    container(docker_client, agent).kill()
    api = supervised.api()
    wait_for(lambda: api.get(f"/agents/{agent_name}").json()["data"]["restarts"] == 1,
             timeout=30, message="one restart")
    shown = api.get(f"/agents/{agent_name}").json()["data"]
    assert shown["status"] == "running" and "exited with code 137" in shown["last_error"]
    assert container(docker_client, agent).status == "running"
    listing = supervised.cli("list").stdout
    row = next(line for line in listing.splitlines() if agent_name in line)
    assert " 1 " in row and "exited with code 137" in row


def test_crash_loop_backs_off_then_fails_with_its_reason(supervised, agent_name, docker_client):
    since = time.time()
    agent = deployed(supervised, agent_name, "--image", ECHO_IMAGE, "--auto-restart",
                     "--start", "--env", "ECHO_EXIT_ON_START=3")
    api = supervised.api()
    failed = wait_for(lambda: (a := api.get(f"/agents/{agent_name}").json()["data"])["status"]
                      == "failed" and a, timeout=90, message="the failed verdict")
    assert "crash loop" in failed["last_error"] and "exited with code 3" in failed["last_error"]
    assert failed["restarts"] == 4
    starts = [event["time"] + event["timeNano"] % 10**9 / 1e9 for event in docker_client.events(
        since=int(since), until=int(time.time()) + 1, decode=True,
        filters={"container": f"agentainer-{agent['id']}", "event": "start"})]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # NOTE: the delays are 0.5 s x 1, 2, 4, 8, each jittered to 50-100 %, so the last gap
    # exceeds the first by at least 2 - 0.5 s; each gap also holds a crash (about 1 s, which
    # varies), hence the margin. Without backoff the gaps would be equal.
    assert len(gaps) == 4 and gaps[-1] - gaps[0] > 1.0, gaps
    time.sleep(3)
    assert api.get(f"/agents/{agent_name}").json()["data"]["status"] == "failed"  # no more


def test_start_that_cannot_succeed_backs_off_then_fails_with_the_error(supervised, agent_name,
                                                                     docker_client):
    data = supervised.home / f"{agent_name}-data"
    agent = deployed(supervised, agent_name, "--image", ECHO_IMAGE, "--auto-restart",
                     "--start", "--volume", f"{data}:/data")
    wait_for(lambda: b"listening" in container(docker_client, agent).logs(), message="app")
    shutil.rmtree(data)  # NOTE: every later start fails: the bind source is gone
    container(docker_client, agent).kill()
    api = supervised.api()
    failed = wait_for(lambda: (a := api.get(f"/agents/{agent_name}").json()["data"])["status"]
                      == "failed" and a, timeout=60, message="the failed verdict")
    assert "crash loop: 4 restart attempts" in failed["last_error"]
    assert "bind source path does not exist" in failed["last_error"]
    assert failed["restarts"] == 0
    time.sleep(3)
    assert api.get(f"/agents/{agent_name}").json()["data"]["status"] == "failed"  # no more


def test_agent_paused_behind_our_back_is_recorded_as_paused(supervised, agent_name,
                                                            docker_client):
    agent = deployed(supervised, agent_name, "--image", ECHO_IMAGE, "--auto-restart",
                     "--start")
    wait_for(lambda: b"listening" in container(docker_client, agent).logs(), message="app")
    container(docker_client, agent).pause()
    api = supervised.api()
    wait_for(lambda: api.get(f"/agents/{agent_name}").json()["data"]["status"] == "paused",
             timeout=30, message="paused")
    time.sleep(3)  # NOTE: a reconciliation (every 2 s) must not take it for a crash
    shown = api.get(f"/agents/{agent_name}").json()["data"]
    assert shown["status"] == "paused" and shown["desired"] == "running"
    assert shown["restarts"] == 0 and not shown["last_error"]
    container(docker_client, agent).unpause()
    wait_for(lambda: api.get(f"/agents/{agent_name}").json()["data"]["status"] == "running",
             timeout=30, message="running again")


def test_agent_without_auto_restart_stays_down_and_queues(supervised, agent_name,
                                                          docker_client):
    agent = deployed(supervised, agent_name, "--image", ECHO_IMAGE, "--start")
    wait_for(lambda: b"listening" in container(docker_client, agent).logs(), message="app")
    container(docker_client, agent).kill()
    api = supervised.api()
    stopped = wait_for(lambda: (a := api.get(f"/agents/{agent_name}").json()["data"])["status"]
                       == "stopped" and a["last_error"] and a, timeout=30, message="stopped")
    assert stopped["restarts"] == 0 and stopped["desired"] == "stopped"
    reply = requests.post(f"{supervised.url}/agent/{agent_name}/later", timeout=30)
    assert reply.status_code == 202
    time.sleep(3)
    assert container(docker_client, agent).status == "exited"


def test_container_removed_behind_our_back_is_reflected(supervised, agent_name, docker_client):
    agent = deployed(supervised, agent_name, "--image", ECHO_IMAGE, "--start")
    container(docker_client, agent).remove(force=True)
    api = supervised.api()
    # NOTE: the status is reconciled first, then the crash judged, which says why it stopped
    wait_for(lambda: (a := api.get(f"/agents/{agent_name}").json()["data"])["status"]
             == "stopped" and a["last_error"], timeout=30, message="stopped, and why")
    assert api.post(f"/agents/{agent_name}/resume").status_code == 200  # recreated


def test_orphan_containers_are_removed(supervised, agent_name, docker_client):
    agent = deployed(supervised, agent_name, "--image", ECHO_IMAGE)
    client = redis.Redis.from_url(supervised.redis_url)
    client.delete(f"agentainer:agent:{agent['id']}")
    client.zrem("agentainer:agents", agent["id"])
    # NOTE: a container younger than ORPHAN_GRACE may be a deploy in progress: left alone.
    wait_for(lambda: not docker_client.containers.list(
        all=True, filters={"name": f"agentainer-{agent['id']}"}), timeout=ORPHAN_GRACE + 30,
        message="the orphan to be removed")


@pytest.mark.parametrize("auto_restart", [True, False])
def test_failed_probes_restart_only_with_auto_restart(supervised, agent_name, auto_restart):
    flags = ["--auto-restart"] if auto_restart else []
    deployed(supervised, agent_name, "--image", STATEFUL_IMAGE, "--start",
             "--health-endpoint", "/no-such-route", "--health-interval", "1s",
             "--health-retries", "2", *flags)
    api = supervised.api()
    report = wait_for(lambda: (h := api.get(f"/agents/{agent_name}/health").json()["data"])
                      ["failures"] >= 2 and h, timeout=30, message="failed probes")
    assert report["healthy"] is False and report["status_code"] == 404
    if auto_restart:
        wait_for(lambda: api.get(f"/agents/{agent_name}").json()["data"]["restarts"] >= 1,
                 timeout=30, message="a restart")
        assert "health probe failed" in api.get(f"/agents/{agent_name}").json()["data"][
            "last_error"]
    else:
        time.sleep(4)
        agent = api.get(f"/agents/{agent_name}").json()["data"]
        assert agent["restarts"] == 0 and agent["status"] == "running"
    assert supervised.cli("health").returncode == 0
    assert agent_name in supervised.cli("health").stdout


def test_removed_agent_leaves_no_health_or_metrics_behind(supervised, agent_name):
    agent = deployed(supervised, agent_name, "--image", STATEFUL_IMAGE, "--start",
                     "--health-endpoint", "/", "--health-interval", "1s")
    client = redis.Redis.from_url(supervised.redis_url)
    keys = [f"agentainer:health:{agent['id']}", f"agentainer:metrics:{agent['id']}"]
    wait_for(lambda: client.exists(*keys) == 2, timeout=30, message="a probe and a sample")
    assert supervised.cli("remove", agent_name).returncode == 0
    time.sleep(3)  # NOTE: probes and samples under way at the removal must not write back
    assert client.exists(*keys) == 0


def test_metrics(supervised, agent_name):
    deployed(supervised, agent_name, "--image", ECHO_IMAGE, "--start")
    api = supervised.api()
    live = wait_for(lambda: api.get(f"/agents/{agent_name}/metrics").json().get("data"),
                    message="live metrics")
    assert {"cpu_percent", "memory_bytes", "memory_limit_bytes", "network_rx_bytes",
            "network_tx_bytes", "block_read_bytes", "block_write_bytes", "pids"} <= set(live)
    assert live["pids"] >= 1 and live["memory_bytes"] > 0
    history = wait_for(lambda: len(api.get(f"/agents/{agent_name}/metrics/history",
                                           params={"duration": "5m"}).json()["data"]["samples"])
                       >= 2, timeout=30, message="two samples")
    assert history
    shown = supervised.cli("metrics", agent_name)
    assert shown.returncode == 0 and "cpu:" in shown.stdout
    assert "CPU %" in supervised.cli("metrics", agent_name, "--history").stdout
    text = api.get("/metrics").text
    for name in ("agentainer_proxied_requests_total", "agentainer_queued_requests_total",
                 "agentainer_replayed_requests_total", "agentainer_failed_requests_total",
                 "agentainer_agent_restarts_total", 'agentainer_agents{status="running"}',
                 "agentainer_queue_depth", "agentainer_proxy_latency_seconds_bucket",
                 "agentainer_journal_bytes"):
        assert name in text, name
    assert requests.get(supervised.url + "/metrics", timeout=5).status_code == 401


@pytest.mark.parametrize("program", ["server:server-0", "worker:worker-1", "monitor"])
def test_killed_programs_come_back_and_nothing_is_lost(supervised, agent_name, program):
    deployed(supervised, agent_name, "--image", ECHO_IMAGE)
    ids = [requests.post(f"{supervised.url}/agent/{agent_name}/p/{n}", timeout=30).json()
           ["data"]["request_id"] for n in range(5)]
    before = supervised.pids()[program]
    os.kill(before, 9)
    wait_for(lambda: supervised.pids().get(program, before) != before, timeout=60,
             message=f"supervisord to restart {program}")
    wait_for(lambda: requests.get(supervised.url + "/health", timeout=2).ok, message="server")
    api = supervised.api()
    assert api.post(f"/agents/{agent_name}/start").status_code == 200
    for rid in ids:
        wait_for_status(api, agent_name, rid, "completed")


def test_stack_restart_brings_desired_agents_back_and_drains(supervised, agent_name,
                                                             docker_client):
    agent = deployed(supervised, agent_name, "--image", ECHO_IMAGE, "--start")
    wait_for(lambda: b"listening" in container(docker_client, agent).logs(), message="app")
    assert supervised.ctl("stop", "monitor").returncode == 0
    container(docker_client, agent).stop(timeout=5)  # as a host reboot would
    replies = [requests.post(f"{supervised.url}/agent/{agent_name}/after/{n}", timeout=30)
               for n in range(3)]
    assert [r.status_code for r in replies] == [202, 202, 202]
    supervised.shutdown()
    supervised.start()
    api = supervised.api()
    wait_for(lambda: api.get(f"/agents/{agent_name}").json()["data"]["status"] == "running",
             timeout=60, message="the agent back up")
    for reply in replies:
        wait_for_status(api, agent_name, reply.json()["data"]["request_id"], "completed")
    assert len([r for r in all_records(api, agent_name) if r["path"].startswith("/after/")]) == 3
