"""An external Redis over TLS (``rediss://``) with its password in ``redis_password_file``:
what the Swarm stack's programs may be given instead of the stack's own Redis.

A real redis-server, TLS only, with a CA and a server certificate made by openssl here; the
programs' client (wiring.redis_client: the pool, RQ, and the journal's lean ADMIT path).
"""

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import rq

from agentainer import config, wiring
from agentainer.journal.journal import IncomingRequest, new_request_id
from agentainer.keys import PREFIX
from tests.helpers import free_port

PASSWORD = secrets.token_urlsafe(24)


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
    conf.write_text(f"requirepass {PASSWORD}\n")
    server = subprocess.Popen(
        ["redis-server", str(conf), "--port", "0", "--tls-port", str(port),
         "--tls-cert-file", "server.pem", "--tls-key-file", "server.key",
         "--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no", "--save", "",
         "--appendonly", "no", "--dir", str(folder)], cwd=folder,
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(["redis-cli", "--tls", "--cacert", "ca.pem", "-p", str(port),
                              "--no-auth-warning", "-a", PASSWORD, "ping"], cwd=folder,
                             capture_output=True, text=True).stdout.strip() != "PONG":
            assert time.monotonic() < deadline, "the TLS redis-server did not start"
            assert server.poll() is None, "redis-server exited (built without TLS?)"
            time.sleep(0.2)
        yield port, folder
    finally:
        server.terminate()
        server.wait(timeout=10)


def settings(port: int, folder: Path, *, ca: str = "ca.pem", scheme: str = "rediss"):
    secret = folder / "redis.password"
    secret.write_text(PASSWORD + "\n")
    return config.load(None, environ={
        "AGENTAINER_REDIS_URL": f"{scheme}://127.0.0.1:{port}/0"
                                + (f"?ssl_ca_certs={folder / ca}" if scheme == "rediss" else ""),
        "AGENTAINER_REDIS_PASSWORD_FILE": str(secret), "AGENTAINER_REDIS_WAIT": "1s"})


def test_every_redis_user_works_over_tls_with_the_password_file(tls_redis):
    port, folder = tls_redis
    components = wiring.build(settings(port, folder), kind="server")
    assert components.redis.ping()
    agent_id = secrets.token_hex(6)
    components.redis.hset(f"{PREFIX}agent:{agent_id}", mapping={
        "status": "stopped", "route": "", "persist": "1", "private_hash": "", "ordered": "0"})
    incoming = IncomingRequest(method="POST", path="/", query="", headers=[], body=b"x",
                               fingerprint="fp", idempotency_key="")
    # NOTE: ADMIT takes the journal's lean path, on connections of its own
    admission = components.journal.admit(agent_id, by_id=True, token_hash="",
                                         request_id=new_request_id(), request=incoming)
    assert admission.outcome.value == "queued"
    queue = rq.Queue("tls-test", connection=components.redis)
    assert queue.count == 0


def test_a_wrong_ca_fails_fast_and_says_why(tls_redis):
    port, folder = tls_redis
    client = wiring.redis_client(settings(port, folder, ca="other-ca.pem"))
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError, match="(?i)certificate"):
        client.ping()
    assert time.monotonic() - started < 10


def test_plain_redis_to_the_tls_port_fails_fast(tls_redis):
    port, folder = tls_redis
    client = wiring.redis_client(settings(port, folder, scheme="redis"))
    started = time.monotonic()
    with pytest.raises(redis.RedisError):
        client.ping()
    assert time.monotonic() - started < 15
