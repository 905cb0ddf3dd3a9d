"""The real CLI (bin/agentainer) against the real server: output, JSON, exit codes, logs."""

import json
import select
import subprocess
import sys
import time

from tests.helpers import free_port, wait_for
from tests.stack import BIN, ECHO_IMAGE, Api, Stack, run_cli


def test_first_agent_walkthrough(stack: Stack, name: str):
    deployed = run_cli(stack, "deploy", "--name", name, "--image", ECHO_IMAGE)
    assert deployed.returncode == 0, deployed.stderr
    assert f"deployed {name}" in deployed.stdout and "created" in deployed.stdout
    assert run_cli(stack, "start", name).stdout.strip() == f"{name}: running"
    listing = run_cli(stack, "list").stdout.splitlines()
    assert listing[0].split() == ["ID", "NAME", "IMAGE", "STATUS", "RESTARTS", "CREATED",
                                  "LAST", "FAILURE"]
    row = next(line for line in listing if f" {name} " in line)
    assert "running" in row
    assert listing[0].index("STATUS") == row.index("running")  # aligned columns


def test_deploy_flags_reach_the_container(stack: Stack, name: str, docker_client):
    volume_dir = stack.volume_root / f"{name}-rel"
    volume_dir.mkdir()
    result = subprocess.run(
        [sys.executable, str(BIN / "agentainer"), "deploy", "-n", name, "-i", ECHO_IMAGE,
         "-e", "LIST=a,b", "-e", "EQ=x=y", "--cpu", "0.5", "--memory", "128Mi",
         "-v", f"./{volume_dir.name}:/rel:ro", "--auto-restart", "--manage-token", "t" * 20,
         "--app-port", "8000", "--health-endpoint", "/health", "--health-interval", "10s",
         "--health-timeout", "2s", "--health-retries", "2", "--start", "--json"],
        env={**stack.env, "AGENTAINER_URL": stack.url, "AGENTAINER_TOKEN": stack.token},
        cwd=stack.volume_root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    agent = json.loads(result.stdout)
    assert agent["status"] == "running" and agent["auto_restart"] is True
    assert agent["health_check"] == {"endpoint": "/health", "interval": 10.0, "timeout": 2.0,
                                     "retries": 2}
    info = docker_client.api.inspect_container(f"agentainer-{agent['id']}")
    env = dict(item.split("=", 1) for item in info["Config"]["Env"])
    assert env["LIST"] == "a,b" and env["EQ"] == "x=y"
    assert info["HostConfig"]["NanoCpus"] == 500_000_000
    assert info["HostConfig"]["Memory"] == 128 * 1024 * 1024
    mount = info["HostConfig"]["Mounts"][0]
    assert mount["Source"] == str(volume_dir) and mount["ReadOnly"] is True


def test_list_quiet_and_json(stack: Stack, api: Api, name: str):
    agent = api.deploy(name)
    assert agent["id"] in run_cli(stack, "list", "-q").stdout.split()
    listed = json.loads(run_cli(stack, "list", "--json", "--name", name).stdout)
    assert [a["id"] for a in listed] == [agent["id"]]
    inspected = json.loads(run_cli(stack, "inspect", name, "--json").stdout)
    assert inspected["id"] == agent["id"]
    assert f"{'status:':<15} created" in run_cli(stack, "inspect", name).stdout


def test_exit_codes_and_errors_on_stderr(stack: Stack, api: Api, name: str):
    missing = run_cli(stack, "start", "nobody-here")
    assert missing.returncode == 3 and missing.stdout == ""
    assert "not found" in missing.stderr and "[agent_not_found]" in missing.stderr
    api.deploy(name)
    assert run_cli(stack, "restart", name).returncode == 4
    assert run_cli(stack, "deploy", "--name", name, "--image", ECHO_IMAGE).returncode == 4
    assert run_cli(stack, "list", token="not-a-valid-token-at-all").returncode == 5
    assert run_cli(stack, "deploy", "--name", "x", "--image", ECHO_IMAGE,
                   "-v", "/a:/b:rx").returncode == 2
    typo = run_cli(stack, "deploy", "--name", "x", "--image", ECHO_IMAGE, "--nmae", "y")
    assert typo.returncode == 2 and "--nmae" in typo.stderr


def test_no_token_anywhere_is_exit_5_with_a_hint(stack: Stack, tmp_path):
    env = {**stack.env, "AGENTAINER_URL": stack.url, "AGENTAINER_DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, str(BIN / "agentainer"), "list"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 5
    assert "[unauthorized]" in result.stderr and "hint:" in result.stderr


def test_unreachable_server_is_exit_6(stack: Stack):
    result = subprocess.run([sys.executable, str(BIN / "agentainer"), "--url",
                             "http://127.0.0.1:9", "--token", "x", "list"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 6 and "cannot reach" in result.stderr


def test_lifecycle_commands(stack: Stack, api: Api, name: str):
    api.deploy(name, start=True)
    for verb, status in (("pause", "paused"), ("resume", "running"), ("restart", "running"),
                         ("stop", "stopped"), ("resume", "running")):
        result = run_cli(stack, verb, name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"{name}: {status}"
    removed = run_cli(stack, "remove", name)
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert api.get(f"/agents/{name}").status_code == 404


def test_token_and_version(stack: Stack):
    env_less = {k: v for k, v in stack.env.items() if k != "AGENTAINER_TOKEN"}
    result = subprocess.run([sys.executable, str(BIN / "agentainer"), "token"], env=env_less,
                            capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == stack.token
    version = run_cli(stack, "version")
    assert version.returncode == 0 and "server: 0.1.0" in version.stdout


def test_token_json(stack: Stack):
    env = {k: v for k, v in stack.env.items() if k != "AGENTAINER_TOKEN"}
    result = subprocess.run([sys.executable, str(BIN / "agentainer"), "token", "--json"],
                            env=env, capture_output=True, text=True, timeout=30)
    assert json.loads(result.stdout) == {"token": stack.token}


def test_logs_offers_no_json(stack: Stack):
    result = run_cli(stack, "logs", "anyone", "--json")
    assert result.returncode == 2 and "--json" in result.stderr


def test_local_token_is_not_sent_to_another_server(stack: Stack):
    """APPSEC: exit 5 before connecting (a connection attempt would be exit 6)."""
    other = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in stack.env.items() if k != "AGENTAINER_TOKEN"}
    result = subprocess.run([sys.executable, str(BIN / "agentainer"), "--url", other, "list"],
                            env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 5, result.stderr
    assert "[token_required]" in result.stderr and "AGENTAINER_TOKEN" in result.stderr
    assert stack.token not in result.stderr


def test_deploy_pull_failure(stack: Stack, api: Api, name: str):
    # NOTE: a loopback port that refuses connections: the test never leaves this machine.
    result = run_cli(stack, "deploy", "--name", name, "--image", "127.0.0.1:1/nope:latest",
                     "--pull")
    assert result.returncode == 6, result.stderr  # NOTE: the registry is unreachable
    assert "cannot pull image" in result.stderr and "[image_pull_failed]" in result.stderr
    assert "hint:" in result.stderr
    assert api.get(f"/agents/{name}").status_code == 404


def test_cli_finds_local_server_and_token_without_flags(stack: Stack):
    """With no AGENTAINER_URL/TOKEN, the conf (here: env settings) locates both."""
    env = {k: v for k, v in stack.env.items() if k not in ("AGENTAINER_URL", "AGENTAINER_TOKEN")}
    result = subprocess.run([sys.executable, str(BIN / "agentainer"), "list", "-q"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_logs_tail_and_follow_streams_new_lines(stack: Stack, api: Api, name: str):
    api.deploy(name, start=True, env_vars={"ECHO_TICK": "0.3"})
    wait_for(lambda: "tick 3" in run_cli(stack, "logs", name).stdout, message="ticks")
    tail = run_cli(stack, "logs", name, "--tail", "1").stdout.splitlines()
    assert len(tail) == 1 and tail[0].startswith("tick")
    assert "\x01" not in run_cli(stack, "logs", name).stdout  # demultiplexed: no frame headers
    follow = subprocess.Popen(
        [sys.executable, str(BIN / "agentainer"), "logs", name, "--follow", "--since", "1s"],
        env={**stack.env, "AGENTAINER_URL": stack.url, "AGENTAINER_TOKEN": stack.token},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen: list[int] = []
        deadline = time.monotonic() + 20
        while len(seen) < 4 and time.monotonic() < deadline:
            ready, _, _ = select.select([follow.stdout], [], [], 1)
            if ready:
                line = follow.stdout.readline().decode()
                if line.startswith("tick"):
                    seen.append(int(line.split()[1]))
        assert len(seen) >= 4, f"follow printed only {seen}"
        assert seen == sorted(seen) and seen[-1] > seen[0]
        assert follow.poll() is None  # still following
    finally:
        follow.kill()
        follow.wait()
