"""An external Redis over TLS (``rediss://``) with its password in ``redis_password_file``:
what the Swarm stack's programs may be given instead of the stack's own Redis.

A real redis-server, TLS only, with a CA and a server certificate made by openssl here; the
programs' client (wiring.build: the pool, RQ, and the journal's lean ADMIT path).
"""

import contextlib
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import rq
from redis.commands.core import Script

from agentainer import config, wiring
from agentainer.errors import Unavailable
from agentainer.journal import scripts
from agentainer.journal.journal import Completion, IncomingRequest, Outcome, new_request_id
from agentainer.keys import PREFIX
from tests.helpers import free_port, wait_for

PASSWORD = secrets.token_urlsafe(24)
DB = 5  # NOTE: not 0, so that every connection is seen to select the URL's database


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def authority(folder: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.pem", "-days", "1", "-subj", f"/CN={name}", cwd=folder)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    authority(folder, "ca")
    authority(folder, "other-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=127.0.0.1", cwd=folder)
    (folder / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "ext",
            cwd=folder)
    port = free_port()
    conf = folder / "redis.conf"
    conf.write_text(f"requirepass {PASSWORD}\n")  # NOTE: off the command line, as in the stack
    server = subprocess.Popen(
        ["redis-server", str(conf), "--bind", "127.0.0.1", "--port", "0", "--tls-port",
         str(port), "--tls-cert-file", "server.pem", "--tls-key-file", "server.key",
         "--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no", "--save", "",
         "--appendonly", "no", "--dir", str(folder)], cwd=folder,
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        ping = ["redis-cli", "--tls", "--cacert", "ca.pem", "-p", str(port), "--no-auth-warning",
                "-a", PASSWORD, "ping"]
        wait_for(lambda: server.poll() is None and subprocess.run(
            ping, cwd=folder, capture_output=True, text=True, timeout=5).stdout.strip() == "PONG",
                 timeout=20, message="the TLS redis-server (built with TLS?)")
        yield port, folder
    finally:
        server.terminate()
        server.wait(timeout=10)


def settings(port: int, folder: Path, *, query: str = "ssl_ca_certs={folder}/ca.pem",
             scheme: str = "rediss") -> config.Config:
    """The Swarm stack's settings for an external Redis: its password in a file of its own."""
    secret = folder / "redis.password"
    secret.write_text(PASSWORD + "\n")
    return config.load(None, environ={
        "AGENTAINER_CONFIG": "/dev/null", "AGENTAINER_DATA_DIR": str(folder / "data"),
        "AGENTAINER_EMBEDDED_REDIS": "false",
        "AGENTAINER_REDIS_URL": f"{scheme}://127.0.0.1:{port}/{DB}"
                                + (f"?{query.format(folder=folder)}" if query else ""),
        "AGENTAINER_REDIS_PASSWORD_FILE": str(secret), "AGENTAINER_REDIS_WAIT": "1s"})


@contextlib.contextmanager
def lean_only() -> Iterator[None]:
    """Fail a journal script run on the full path, which the lean path falls back on when
    its own connection fails: ADMIT must run on the lean path's connections meanwhile."""
    def refused(self: Script, *args: object, **kwargs: object) -> None:
        raise AssertionError("the lean path fell back on the full path")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Script, "__call__", refused)
        yield


def admit(components: wiring.Components, agent_id: str):
    incoming = IncomingRequest(method="POST", path="/", query="", headers=[], body=b"x",
                               fingerprint="fp", idempotency_key="")
    return components.journal.admit(agent_id, by_id=True, token_hash="",
                                    request_id=new_request_id(), request=incoming)


def agent(components: wiring.Components, status: str) -> str:
    agent_id = secrets.token_hex(6)
    components.redis.hset(f"{PREFIX}agent:{agent_id}", mapping={
        "status": status, "route": "10.0.0.2:8000" if status == "running" else "",
        "persist": "1", "private_hash": "", "ordered": "0"})
    return agent_id


def test_every_redis_user_works_over_tls_with_the_password_file(tls_redis):
    port, folder = tls_redis
    components = wiring.build(settings(port, folder), kind="server")
    assert components.redis.ping()
    components.redis.script_load(scripts.ADMIT)  # NOTE: else the first ADMIT loads it
    with lean_only():
        forwarded = admit(components, agent(components, "running"))
        assert forwarded.outcome is Outcome.FORWARD
        assert admit(components, agent(components, "stopped")).outcome is Outcome.QUEUED
    assert components.journal.complete(forwarded.request_id, status=200, headers=[],
                                       body=b"ok", truncated=False,
                                       lease=forwarded.lease) is Completion.COMPLETED
    other = redis.Redis.from_url(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={folder}/ca.pem",
                                 password=PASSWORD)
    assert other.dbsize() == 0, "a connection used database 0, not the URL's"
    other.close()

    queue = rq.Queue("tls-test", connection=components.redis)
    job = queue.enqueue("operator.add", 2, 3)
    assert rq.SimpleWorker([queue], connection=components.redis).work(burst=True)
    assert job.return_value(refresh=True) == 5


def test_a_wrong_ca_fails_fast_and_says_why(tls_redis):
    port, folder = tls_redis
    components = wiring.build(settings(port, folder, query="ssl_ca_certs={folder}/other-ca.pem"),
                              kind="server")
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError, match="(?i)certificate verify failed"):
        components.redis.ping()
    with pytest.raises(Unavailable, match="(?i)certificate verify failed"):
        admit(components, "any")  # NOTE: the lean path, then the full one
    assert time.monotonic() - started < 10


def test_the_urls_tls_parameters_reach_the_lean_path(tls_redis):
    port, folder = tls_redis
    # NOTE: the wrong CA, but no verification asked for (ssl_cert_reqs=none): it connects
    lax = settings(port, folder, query="ssl_ca_certs={folder}/other-ca.pem&ssl_cert_reqs=none")
    components = wiring.build(lax, kind="server")
    components.redis.script_load(scripts.ADMIT)
    with lean_only():
        assert admit(components, agent(components, "stopped")).outcome is Outcome.QUEUED


def test_plain_redis_to_the_tls_port_fails_fast(tls_redis):
    port, folder = tls_redis
    client = wiring.redis_client(settings(port, folder, query="", scheme="redis"))
    started = time.monotonic()
    with pytest.raises(redis.RedisError):
        client.ping()
    assert time.monotonic() - started < 15
