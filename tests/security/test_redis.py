"""The embedded Redis is not an open door: it requires the password in the data directory.

The real ``agentainer-redis`` (the program supervisord runs) on a free port, over a data
directory an older, password-less version left behind, and a real ``agentainer-server``
against it.
"""

import os
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import requests

from tests.helpers import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin"


@dataclass
class Embedded:
    env: dict[str, str]
    data_dir: Path
    port: int
    process: subprocess.Popen

    @property
    def password(self) -> str:
        return (self.data_dir / "redis.password").read_text().strip()

    def cli(self, *args: str, password: str | None = None) -> str:
        """Run ``redis-cli``; the password goes in REDISCLI_AUTH, not on its command line."""
        env = {**os.environ, "REDISCLI_AUTH": password} if password else None
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], env=env,
                              capture_output=True, text=True, timeout=10).stdout.strip()


def _older_data_dir(data_dir: Path) -> None:
    """Leave what an older version left: an AOF with a key, no password file, umask 022."""
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True)
    data_dir.chmod(0o755)
    redis_dir.chmod(0o755)
    port = free_port()
    old = subprocess.Popen(
        [shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(port),
         "--dir", str(redis_dir), "--appendonly", "yes", "--save", "", "--daemonize", "no"],
        stdout=subprocess.DEVNULL, preexec_fn=lambda: os.umask(0o022))
    try:
        wait_for(lambda: subprocess.run(["redis-cli", "-p", str(port), "set", "kept", "yes"],
                                        capture_output=True, text=True).stdout.strip() == "OK",
                 timeout=10, message="the older redis-server")
    finally:
        old.terminate()  # NOTE: TERM: the AOF is written out
        old.wait(timeout=10)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    home = tmp_path_factory.mktemp("embedded-redis")
    data_dir = home / "data"
    _older_data_dir(data_dir)
    conf = home / "empty.conf"
    conf.write_text("[agentainer]\n")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("AGENTAINER_")}
    env.update(PYTHONPATH=str(ROOT), AGENTAINER_CONFIG=str(conf),
               AGENTAINER_DATA_DIR=str(data_dir),
               AGENTAINER_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    with open(home / "redis.log", "wb") as log:
        process = subprocess.Popen([sys.executable, str(BIN / "agentainer-redis")], env=env,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    stack = Embedded(env, data_dir, port, process)
    try:
        wait_for(lambda: stack.cli("ping", password=stack.password) == "PONG", timeout=20,
                 message=f"agentainer-redis (log: {home}/redis.log)")
        yield stack
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_client_without_the_password_is_refused(embedded: Embedded):
    assert embedded.cli("ping").startswith("NOAUTH")
    assert embedded.cli("get", "kept").startswith("NOAUTH")
    # NOTE: redis-cli warns of the failed AUTH on stderr, then the command meets NOAUTH
    assert embedded.cli("ping", password="not-the-password").startswith(("NOAUTH", "WRONGPASS"))
    assert embedded.cli("ping", password=embedded.password) == "PONG"


def test_an_older_data_dir_gets_a_password_and_keeps_its_data(embedded: Embedded):
    assert len(embedded.password) >= 32
    assert embedded.cli("get", "kept", password=embedded.password) == "yes"


def test_the_password_is_not_on_any_command_line(embedded: Embedded):
    cmdline = Path(f"/proc/{embedded.process.pid}/cmdline").read_bytes()
    assert b"redis-server" in cmdline  # NOTE: agentainer-redis became redis-server (execv)
    assert embedded.password.encode() not in cmdline
    every = subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True).stdout
    assert embedded.password not in every


def test_the_data_dir_redis_dir_and_aof_are_private(embedded: Embedded):
    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    redis_dir = embedded.data_dir / "redis"
    aof_files = [path for path in redis_dir.rglob("*") if path.is_file()]
    assert any(path.name.endswith(".aof") for path in aof_files)  # NOTE: Redis 7: appendonlydir
    assert mode(embedded.data_dir) == mode(redis_dir) == 0o700
    assert mode(redis_dir / "appendonlydir") == 0o700
    assert {path.name: mode(path) for path in aof_files} == {p.name: 0o600 for p in aof_files}
    assert mode(embedded.data_dir / "redis.password") == 0o600


def test_a_server_against_it_is_healthy(embedded: Embedded, docker_client: docker.DockerClient):
    prefix = f"agredis{secrets.token_hex(3)}"
    port = free_port()
    env = {**embedded.env, "AGENTAINER_PORT": str(port),
           "AGENTAINER_NETWORK": f"{prefix}-net",
           "AGENTAINER_INTERNAL_NETWORK": f"{prefix}-internal",
           "AGENTAINER_VOLUME_ROOTS": str(embedded.data_dir)}
    with open(embedded.data_dir.parent / "server.log", "wb") as log:
        server = subprocess.Popen([sys.executable, str(BIN / "agentainer-server")], env=env,
                                  stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    try:
        reply = wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/health", timeout=2),
                         timeout=30, message="the server's /health")
        assert reply.json()["data"]["redis"] == "ok", reply.text
    finally:
        server.terminate()
        server.wait(timeout=15)
        for network in docker_client.networks.list(names=[f"{prefix}-net",
                                                          f"{prefix}-internal"]):
            network.remove()
