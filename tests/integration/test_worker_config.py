"""A worker delivers with the settings of its own ``--config`` (issue 10).

Its drainer is built once, by the composition root, from that conf: here another Redis (on
another port) and another ``capture_limit`` than the defaults and the environment give.
"""

import secrets
from collections.abc import Iterator

import pytest
import redis
import requests
import rq
from rq.serializers import JSONSerializer

from tests.conftest import RedisServer
from tests.integration.journal_helpers import wait_for_status, worker_log_lines
from tests.stack import Api, Stack, _clean_docker, make_stack

CAPTURE = 100  # bytes: below the default (1m) and the tests' (64k)


@pytest.fixture
def conf_stack(docker_client, redis_url: str, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[Stack, RedisServer]]:
    """A server and one worker whose only Redis URL and capture limit are in ``--config``."""
    other = RedisServer(tmp_path_factory.mktemp("conf-redis"))
    other.start()
    assert other.url != redis_url
    prefix = f"agconf{secrets.token_hex(3)}"
    data_dir = tmp_path_factory.mktemp("conf-data")
    stack = make_stack(other.url, data_dir, tmp_path_factory.mktemp("conf-volumes"), prefix)
    # NOTE: the environment would win over the conf file (precedence): leave both to the conf
    del stack.env["AGENTAINER_REDIS_URL"], stack.env["AGENTAINER_CAPTURE_LIMIT"]
    conf = data_dir / "own.conf"
    conf.write_text(f"[agentainer]\nredis_url = {other.url}\nembedded_redis = false\n"
                    f"capture_limit = {CAPTURE}\n")
    stack.args = ("--config", str(conf))
    try:
        stack.start_server()
        stack.start_workers(1)
        yield stack, other
    finally:
        stack.stop_all()
        _clean_docker(docker_client, prefix, other.url)
        other.stop()


def test_a_worker_with_its_own_conf_delivers_through_its_redis_cut_at_its_capture_limit(
        conf_stack: tuple[Stack, RedisServer], redis_url: str):
    stack, other = conf_stack
    api = Api(stack.url, stack.token)
    name = f"{stack.prefix}-echo"
    agent = api.deploy(name)  # stopped: the request waits in the queue for the worker
    reply = requests.post(f"{stack.url}/agent/{name}/conf", data=b"x" * 1000, timeout=30)
    assert reply.status_code == 202, reply.text
    request_id = reply.json()["data"]["request_id"]
    assert api.post(f"/agents/{name}/start").status_code == 200
    done = wait_for_status(api, name, request_id, "completed", timeout=30)
    assert done["resp_status"] == 200 and done["attempts"] == 1
    assert done["resp_truncated"] is True
    assert len(done["resp_body"].encode()) == CAPTURE  # the echo is over 1000 bytes
    assert worker_log_lines(stack, f"agent {agent['id']}: replayed 1 request(s)")
    # NOTE: the record and the worker live in the conf's Redis, not the session's
    client = redis.Redis.from_url(other.url)
    assert len(client.hget(f"agentainer:req:{request_id}", "resp_body")) == CAPTURE
    assert not redis.Redis.from_url(redis_url).exists(f"agentainer:req:{request_id}")
    workers = rq.Worker.all(connection=client, serializer=JSONSerializer)
    assert [w.pid for w in workers] == [stack.workers[0].pid]
