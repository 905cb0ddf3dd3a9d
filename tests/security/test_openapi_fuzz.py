"""Schemathesis against the real server: every answer is one its OpenAPI document allows.

APPSEC: hostile input of every shape, from the document itself: no 500, no undocumented
status, no answer off its schema, no refused valid input nor accepted invalid input.
The hooks (openapi_hooks.py) keep it off registries and bound the containers it makes.
"""

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.conftest import RedisServer
from tests.stack import Api, Stack, _clean_docker, make_stack

HOOKS = "tests.security.openapi_hooks"
CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
TIMEOUT = 240  # seconds, a bound only: alone it runs in about 70 s


@pytest.fixture
def fuzz_stack(docker_client: docker.DockerClient,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own (Redis too): the fuzz's agents meet no other test's, and stop
    kills at once (PERF: fuzzed agents, 6 MB and 1 pid, sat out the whole grace period)."""
    redis_server = RedisServer(tmp_path_factory.mktemp("fuzz-redis"))
    redis_server.start()
    prefix = f"agfuzz{secrets.token_hex(3)}"
    stack = make_stack(redis_server.url, tmp_path_factory.mktemp("fuzz-data"),
                       tmp_path_factory.mktemp("fuzz-volumes"), prefix,
                       AGENTAINER_STOP_TIMEOUT="0s")
    try:
        stack.start_server()
        yield stack
    finally:
        stack.stop_all()
        _clean_docker(docker_client, prefix, redis_server.url)
        redis_server.stop()


def test_the_api_answers_every_fuzzed_request_as_its_document_says(
        fuzz_stack: Stack, docker_client: docker.DockerClient, tmp_path: Path):
    stack, api = fuzz_stack, Api(fuzz_stack.url, fuzz_stack.token)
    since = int(time.time())
    env = {**os.environ, "SCHEMATHESIS_HOOKS": HOOKS,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                          os.environ.get("PYTHONPATH", "")])}
    try:
        run = subprocess.run(
            [str(SCHEMATHESIS), "--config-file", str(CONFIG), "run",
             f"{stack.url}/openapi.json", "--checks", "all",
             "--header", f"Authorization: Bearer {stack.token}",
             "--exclude-path-regex", "^/agent/",  # NOTE: the proxy answers as its agents do
             "--phases", "examples,coverage,fuzzing,stateful",
             "--seed", "9", "--generation-deterministic",
             # NOTE: no --max-time, which makes phases cycle until it is spent (run to run,
             # a different test); each phase runs once
             "--request-timeout", "20", "--workers", "1", "--no-color",
             "--suppress-health-check", "all"],
            env=env, capture_output=True, text=True, timeout=TIMEOUT,
            stdin=subprocess.DEVNULL, cwd=tmp_path)
    finally:
        for agent in api.get("/agents").json()["data"]:
            api.delete(f"/agents/{agent['id']}", params={"volumes": "true"})
    pulls = docker_client.events(since=since, until=int(time.time()) + 1, decode=True,
                                 filters={"type": "image", "event": "pull"})
    assert list(pulls) == [], "the fuzz made Docker pull an image"
    print(run.stdout)  # NOTE: the report, shown by pytest -rP or on failure
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
