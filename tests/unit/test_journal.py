import redis

from agentainer import config
from agentainer.journal.journal import allocated
from agentainer.wiring import RETRY_BASE, RETRY_CAP, redis_client


def test_budgets_count_what_the_allocator_takes():
    assert allocated(0) == 16 and allocated(100) == 116
    assert allocated(10 << 20) == 12 << 20  # NOTE: jemalloc's class above 10 MiB + header
    for length in (5000, 1 << 20, (3 << 20) + 7, 11 << 20):
        assert length < allocated(length) <= length * 1.25 + 16


def test_the_redis_client_resends_for_redis_wait(tmp_path):
    settings = config.load(environ={"AGENTAINER_CONFIG": "/dev/null",
                                    "AGENTAINER_DATA_DIR": str(tmp_path),
                                    "AGENTAINER_REDIS_WAIT": "3s"})
    retry = redis_client(settings).get_retry()
    waits = [min(RETRY_CAP, RETRY_BASE * 2 ** n) for n in range(1, retry.get_retries() + 1)]
    assert 3 <= sum(waits) < 3 + RETRY_CAP


def test_the_redis_client_holds_a_connection_per_thread_and_waits_past_that(tmp_path):
    """redis-py's default pool refuses a 101st connection: 1,000 streams need more."""
    settings = config.load(environ={"AGENTAINER_CONFIG": "/dev/null",
                                    "AGENTAINER_DATA_DIR": str(tmp_path),
                                    "AGENTAINER_THREADS": "1024"})
    pool = redis_client(settings).connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert pool.max_connections == 1024 + settings.proxy_threads + 32
    assert pool.timeout == settings.redis_wait
