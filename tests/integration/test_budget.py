"""Bounded storage under hostile load: anonymous 10 MiB POSTs to a public agent (issue 8).

A stack of its own (server, worker) on a redis-server of its own, run as the embedded one
is (maxmemory above the journal's budget, noeviction), so the byte counts are this test's.
"""

import secrets
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
import requests

from tests.conftest import RedisServer
from tests.helpers import wait_for
from tests.stack import Api, Stack, _clean_docker, make_stack
from tests.integration.journal_helpers import wait_for_status

MIB = 1 << 20
BUDGET = 200 * MIB
MAXMEMORY = 400 * MIB


@pytest.fixture
def budget_stack(docker_client, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[Stack, redis.Redis]]:
    server = RedisServer(tmp_path_factory.mktemp("budget-redis"), "--maxmemory",
                         str(MAXMEMORY), "--maxmemory-policy", "noeviction")
    server.start()
    prefix = f"agbudget{secrets.token_hex(3)}"
    stack = make_stack(server.url, tmp_path_factory.mktemp("budget-data"),
                       tmp_path_factory.mktemp("budget-volumes"), prefix,
                       AGENTAINER_JOURNAL_MAX_BYTES=str(BUDGET),
                       AGENTAINER_QUEUE_MAX_BYTES="1g", AGENTAINER_QUEUE_LIMIT="1000",
                       AGENTAINER_MAX_BODY="11m")
    try:
        stack.start_server()
        stack.start_workers(1)
        yield stack, redis.Redis.from_url(server.url)
    finally:
        stack.stop_all()
        _clean_docker(docker_client, prefix, server.url)
        server.stop()


def test_300_anonymous_10_mib_posts_stay_under_the_budget(budget_stack):
    stack, client = budget_stack
    api = Api(stack.url, stack.token)
    name = f"{stack.prefix}-public"
    api.deploy(name)  # public (no token needed), stopped: every admitted request is kept
    baseline = int(client.info("memory")["used_memory"])
    body = b"z" * (10 * MIB)
    replies: list[requests.Response] = []
    peak = [baseline]
    done = threading.Event()

    def attacker(count: int) -> None:
        session = requests.Session()  # NOTE: anonymous: no Authorization header
        for n in range(count):
            replies.append(session.post(f"{stack.url}/agent/{name}/flood/{n}", data=body,
                                        timeout=60))

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], int(client.info("memory")["used_memory"]))

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=attacker, args=(75,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    done.set()
    sampler.join()
    statuses = Counter(reply.status_code for reply in replies)
    assert len(replies) == 300 and set(statuses) <= {202, 507}, statuses
    admitted = [reply.json()["data"]["request_id"] for reply in replies
                if reply.status_code == 202]
    assert 10 <= len(admitted) <= BUDGET // (10 * MIB), statuses
    for reply in replies:
        if reply.status_code == 507:
            assert reply.json()["error"] == "journal_full"
            assert int(reply.headers["Retry-After"]) > 0
    # NOTE: Redis gives idle clients' query buffers back within a few seconds
    held = wait_for(lambda: (used := int(client.info("memory")["used_memory"]) - baseline)
                    <= BUDGET and used, timeout=15, message="Redis to hold at most the budget")
    assert held > (len(admitted) - 1) * 10 * MIB
    assert peak[0] < MAXMEMORY, f"peak {peak[0] / MIB:.0f} MiB"
    # Nothing already admitted is lost: every one is delivered once the agent runs.
    assert api.post(f"/agents/{name}/start").status_code == 200
    for rid in admitted:
        assert wait_for_status(api, name, rid, "completed", timeout=120)["attempts"] == 1
