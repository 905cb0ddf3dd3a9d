"""Schemathesis against the real server: every answer is one its OpenAPI document allows.

APPSEC: hostile input of every shape, from the document itself: no 500, no undocumented
status, no answer off its schema, no refused valid input nor accepted invalid input.
The hooks (openapi_hooks.py) keep it off registries and bound the containers it makes.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import docker

from tests.stack import Api, Stack

HOOKS = "tests.security.openapi_hooks"
CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
MAX_TIME = 60  # seconds of fuzzing and stateful testing, at most


def test_the_api_answers_every_fuzzed_request_as_its_document_says(
        stack: Stack, api: Api, docker_client: docker.DockerClient, tmp_path: Path):
    before = {agent["id"] for agent in api.get("/agents").json()["data"]}
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
             "--max-examples", "10", "--seed", "9", "--generation-deterministic",
             "--max-time", str(MAX_TIME),
             "--request-timeout", "20", "--workers", "1", "--no-color",
             "--suppress-health-check", "all"],
            env=env, capture_output=True, text=True, timeout=MAX_TIME + 120,
            stdin=subprocess.DEVNULL, cwd=tmp_path)
    finally:
        created = [agent["id"] for agent in api.get("/agents").json()["data"]
                   if agent["id"] not in before]
        for agent_id in created:
            api.delete(f"/agents/{agent_id}", params={"volumes": "true"})
    pulls = docker_client.events(since=since, until=int(time.time()) + 1, decode=True,
                                 filters={"type": "image", "event": "pull"})
    assert list(pulls) == [], "the fuzz made Docker pull an image"
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
