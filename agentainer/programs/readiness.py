"""``python -m agentainer.programs.readiness [verify]``: is the stack up, and if not, why.

``make run`` calls it to wait for the server; ``make verify`` to check everything and say
what is wrong in plain words; ``make swarm-up`` (``readiness swarm --url U --token-file F``)
to wait for the Swarm stack's API.
"""

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

from agentainer import config as configuration, redis_password
from agentainer.cli.client import local_url
from agentainer.config import Config
from agentainer.exit_codes import ExitStatus

CHECKOUT = Path(__file__).resolve().parent.parent.parent
PROGRAMS = ("redis", "server:server-0", "server:server-1", "worker:worker-0",
            "worker:worker-1", "monitor")


def wait(settings: Config, timeout: float = 60.0) -> int:
    """Wait until /health answers and every program runs; say where the server is."""
    url = local_url(settings)
    deadline = time.monotonic() + timeout
    reason = "no answer"
    while time.monotonic() < deadline:
        try:
            reply = requests.get(url + "/health", timeout=2)
            running, detail = _stack()
            if reply.ok and running:
                print(f"Agentainer is up at {url}")
                print(f"admin token: {settings.token_path}"
                      if not settings.token else "admin token: set in the config")
                if redis_password.for_settings(settings):
                    print(f"Redis password: {settings.redis_password_path}")
                print("CLI: .venv/bin/agentainer (see README: put .venv/bin on PATH)")
                return ExitStatus.SUCCESS
            reason = reply.text.strip() if not reply.ok else detail
        except requests.RequestException as ex:
            reason = str(ex)
        time.sleep(0.5)
    print(f"Agentainer is not up at {url} after {timeout:.0f}s: {reason}\n"
          f"see the logs in {settings.data_dir}/logs", file=sys.stderr)
    return ExitStatus.UNAVAILABLE


def _command(name: str, package: str) -> tuple[bool, str]:
    found = shutil.which(name)
    return bool(found), found or f"{name} is missing: install it (apt-get install {package})"


def _docker() -> tuple[bool, str]:
    result = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                            capture_output=True, text=True)
    if result.returncode:
        return False, "the Docker daemon does not answer: start it (make run starts dockerd)"
    return True, f"Docker Engine {result.stdout.strip()}"


def _stack() -> tuple[bool, str]:
    ctl = Path(sys.executable).parent / "supervisorctl"
    result = subprocess.run([str(ctl), "-c", str(CHECKOUT / "supervisord.conf"), "status"],
                            capture_output=True, text=True)
    if result.returncode == 4:
        return False, "supervisord is not running: start the stack with make run"
    states = dict(line.split()[:2] for line in result.stdout.splitlines() if line.strip())
    down = [f"{name} is {states.get(name, 'missing')}" for name in PROGRAMS
            if states.get(name) != "RUNNING"]
    if down:
        return False, "; ".join(down) + " (supervisorctl -c supervisord.conf status; logs in " \
                                        "~/.agentainer/logs)"
    return True, "all programs RUNNING"


def _health(settings: Config) -> tuple[bool, str]:
    try:
        reply = requests.get(local_url(settings) + "/health", timeout=5)
    except requests.RequestException:
        return False, f"nothing answers at {local_url(settings)}: is the server running?"
    data = reply.json().get("data", {})
    if not reply.ok:
        return False, f"the server answers but Redis is {data.get('redis')} and Docker is " \
                      f"{data.get('docker')}"
    return True, f"{local_url(settings)}/health: Redis ok, Docker ok"


def verify(settings: Config) -> int:
    """Check prerequisites and the running stack; print one line per check."""
    checks: list[tuple[str, Callable[[], tuple[bool, str]]]] = [
        ("docker client", lambda: _command("docker", "docker.io")),
        ("dockerd", lambda: _command("dockerd", "docker.io")),
        ("redis-server", lambda: _command("redis-server", "redis-server")),
        ("busybox", lambda: _command("busybox", "busybox-static")),
        ("Docker daemon", _docker),
        ("stack", _stack),
        ("API", lambda: _health(settings)),
    ]
    failed = 0
    for label, check in checks:
        passed, detail = check()
        failed += not passed
        print(f"{'ok ' if passed else 'BAD'}  {label:<13} {detail}")
    print("everything is in order" if not failed else f"{failed} problem(s) found")
    return ExitStatus.SUCCESS if not failed else ExitStatus.UNAVAILABLE


def wait_swarm(url: str, token_file: Path, timeout: float = 180.0) -> int:
    """Wait until the Swarm stack's /health answers and its API takes the admin token."""
    deadline = time.monotonic() + timeout
    reason = "no answer"
    token = token_file.read_text().strip()
    while time.monotonic() < deadline:
        try:
            health = requests.get(url + "/health", timeout=2)
            listed = requests.get(url + "/agents", timeout=2,
                                  headers={"Authorization": f"Bearer {token}"})
            if health.ok and listed.ok:
                print(f"Agentainer (Swarm stack) is up at {url}")
                print(f"admin token: {token_file}")
                print(f"CLI: export AGENTAINER_URL={url} AGENTAINER_TOKEN=$(cat {token_file})")
                return ExitStatus.SUCCESS
            reason = (health if not health.ok else listed).text.strip()
        except requests.RequestException as ex:
            reason = str(ex)
        time.sleep(1)
    print(f"the Swarm stack is not up at {url} after {timeout:.0f}s: {reason}\n"
          "see docker service ls and docker service logs agentainer_server", file=sys.stderr)
    return ExitStatus.UNAVAILABLE


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["swarm"]:
        parser = argparse.ArgumentParser(prog="readiness swarm")
        parser.add_argument("--url", required=True)
        parser.add_argument("--token-file", type=Path, required=True)
        options = parser.parse_args(args[1:])
        return wait_swarm(options.url.rstrip("/"), options.token_file)
    settings = configuration.load()
    return verify(settings) if args == ["verify"] else wait(settings)


if __name__ == "__main__":
    sys.exit(main())
