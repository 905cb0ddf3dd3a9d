"""Session-wide real services: a redis-server of the tests' own, and the Docker Engine.

A missing redis-server or Docker fails the run; nothing is skipped.
"""

import shutil
import subprocess
from pathlib import Path

import docker
import pytest
import redis

from tests.helpers import free_port, wait_for

# NOTE: the real stack (server, workers) serves tests/integration and tests/security alike
pytest_plugins = ["tests.stack"]


class RedisServer:
    """A private redis-server (AOF on, fsync every second) that tests may crash."""

    def __init__(self, workdir: Path, *options: str, host: str = "127.0.0.1") -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (make test installs it)"
        self._command = [binary, "--bind", host, "--port", str(free_port()),
                         "--dir", str(workdir), "--appendonly", "yes",
                         "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
                         # NOTE: a password-less Redis refuses all but loopback clients otherwise
                         "--protected-mode", "yes" if host == "127.0.0.1" else "no", *options]
        self.url = f"redis://{host}:{self._command[4]}/0"
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(self._command, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        wait_for(redis.Redis.from_url(self.url).ping, timeout=10, message="redis-server")

    def crash(self) -> None:
        """SIGKILL: no shutdown save; only what the AOF holds survives."""
        self._process.kill()
        self._process.wait(timeout=10)

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


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
