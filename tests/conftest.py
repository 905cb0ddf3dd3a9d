"""Session-wide real services: a redis-server of the tests' own, and the Docker Engine.

A missing redis-server or Docker fails the run; nothing is skipped.
"""

import shutil
import subprocess

import docker
import pytest
import redis

from tests.helpers import free_port, wait_for


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    """Start a private redis-server (AOF on) on a free loopback port."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (make test installs it)"
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir),
         "--appendonly", "yes", "--save", "", "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    wait_for(client.ping, timeout=10, message="redis-server to answer")
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def docker_client():
    """The real Docker Engine; the run fails when it is not reachable."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as ex:
        pytest.fail(f"Docker Engine is not reachable ({ex}); make test starts dockerd")
    yield client
    client.close()
