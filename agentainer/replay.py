"""Replay of queued requests with RQ: one deduplicated drain job per agent.

A drain job waits until the agent's app accepts connections, then delivers its queued
requests oldest first, one lease at a time, straight to the container. Any HTTP response
completes a request; connection failures and timeouts put it back at the front of the
queue with capped, jittered exponential backoff, and ``max_attempts`` makes it ``failed``.

Key: ``agentainer:drain:{aid}`` (STRING with a TTL), the claim of the agent's pending drain.
"""

import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
import rq

from agentainer import config as configuration
from agentainer.config import Config
from agentainer.errors import AgentNotFound
from agentainer.journal import Journal
from agentainer.proxy import AgentDown, AgentFailed, Upstream, replay_headers, response_headers
from agentainer.states import AgentStatus
from agentainer.store import PREFIX, AgentStore

logger = logging.getLogger(__name__)

QUEUE = "agentainer-replay"


def backoff(attempt: int, *, base: float, cap: float, rand: Callable[[], float] = random.random
            ) -> float:
    """Return the delay before retry number ``attempt`` (1-based): full jitter, capped."""
    return min(cap, base * 2 ** (attempt - 1)) * (0.5 + rand() / 2)


class ReplayScheduler:
    """Enqueues drain jobs; at most one is pending or running per agent.

    The claim is a Redis key that expires with the drain's lease, so a drain whose worker
    was killed stops blocking new ones when its in-flight request is swept back.
    """

    def __init__(self, client: redis.Redis, *, claim_ttl: float) -> None:
        self._redis = client
        self._queue = rq.Queue(QUEUE, connection=client)
        self._ttl = max(1, int(claim_ttl))

    def schedule(self, agent_id: str) -> None:
        """Ask for the agent's queue to be drained (a no-op if a drain is pending).

        Never raises: if Redis is unreachable now, the janitor schedules it later.
        """
        try:
            if self._redis.set(_claim_key(agent_id), "1", nx=True, ex=self._ttl):
                self._queue.enqueue_call(drain, args=(agent_id,), timeout=-1, result_ttl=0,
                                         failure_ttl=3600)
        except redis.RedisError as ex:
            logger.warning("agent %s: cannot schedule its replay now (%s)", agent_id, ex)

    def renew(self, agent_id: str) -> None:
        self._redis.expire(_claim_key(agent_id), self._ttl)

    def release(self, agent_id: str) -> None:
        self._redis.delete(_claim_key(agent_id))


def _claim_key(agent_id: str) -> str:
    return f"{PREFIX}drain:{agent_id}"


@dataclass
class Drainer:
    """Delivers one agent's queued requests (the body of the ``drain`` job)."""

    store: AgentStore
    journal: Journal
    scheduler: ReplayScheduler
    upstream: Upstream
    drain_wait: float
    retry_base: float
    retry_cap: float
    capture_limit: int
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def drain(self, agent_id: str) -> int:
        """Deliver until the queue is empty or the agent is down; return how many completed."""
        try:
            return self._drain(agent_id)
        finally:
            self.scheduler.release(agent_id)

    def _drain(self, agent_id: str) -> int:
        delivered = failures = 0
        route = self._wait_until_reachable(agent_id)
        while route is not None:
            self.scheduler.renew(agent_id)
            record = self.journal.lease_next(agent_id)
            if record is None:
                break
            try:
                response = self._deliver(route, record)
            except (AgentDown, AgentFailed) as ex:
                status, _ = self.journal.retry(record["id"], str(ex),
                                               attempted=not isinstance(ex, AgentDown))
                failures += 1
                logger.info("agent %s: replay of %s failed (%s); it is %s", agent_id,
                            record["id"], ex, status)
                self.sleep(backoff(failures, base=self.retry_base, cap=self.retry_cap))
                route = self._wait_until_reachable(agent_id)
                continue
            failures = 0
            body = response.data
            self.journal.complete(record["id"], status=response.status,
                                  headers=response_headers(response.headers),
                                  body=body[:self.capture_limit],
                                  truncated=len(body) > self.capture_limit, replayed=True)
            delivered += 1
        if delivered:
            logger.info("agent %s: replayed %d request(s)", agent_id, delivered)
        return delivered

    def _deliver(self, route: str, record: dict):
        target = record["path"] + (f"?{record['query']}" if record["query"] else "")
        headers = replay_headers(record["headers"]) + [
            ("X-Agentainer-Request-Id", record["id"]), ("X-Agentainer-Replay", "true")]
        response = self.upstream.send(route, record["method"], target, headers, record["body"])
        try:
            response.data  # NOTE: reads the whole body (replayed responses are not streamed)
        finally:
            response.release_conn()
        return response

    def _wait_until_reachable(self, agent_id: str) -> str | None:
        """Return the agent's ``ip:port`` once its app accepts connections, else None."""
        deadline = self.clock() + self.drain_wait
        delay = 0.05
        while True:
            try:
                status, route = self.store.routing(agent_id)
            except AgentNotFound:
                return None
            if status is not AgentStatus.RUNNING or not route:
                return None
            if _accepts(route):
                return route
            if self.clock() >= deadline:
                logger.info("agent %s: app not accepting connections; replay waits", agent_id)
                return None
            self.sleep(delay)
            delay = min(delay * 2, 1.0)


def _accepts(route: str) -> bool:
    host, _, port = route.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def build_drainer(settings: Config) -> Drainer:
    client = redis.Redis.from_url(settings.redis_url)
    journal = journal_from(client, settings)
    return Drainer(
        store=AgentStore(client, lock_timeout=settings.lock_timeout),
        journal=journal, scheduler=ReplayScheduler(client, claim_ttl=journal.lease_seconds),
        upstream=Upstream(connect_timeout=settings.connect_timeout,
                          read_timeout=settings.read_timeout),
        drain_wait=settings.drain_wait, retry_base=settings.retry_base,
        retry_cap=settings.retry_cap, capture_limit=settings.capture_limit)


LEASE_GRACE = 5.0


def journal_from(client: redis.Redis, settings: Config) -> Journal:
    """Return the journal configured by ``settings``.

    NOTE: an in-flight lease must outlast the longest wait for an answer, which cannot
    renew it (the holder is blocked reading): connect + read timeout, plus a grace.
    Streams renew it as their chunks arrive.
    """
    lease = settings.connect_timeout + settings.read_timeout + LEASE_GRACE
    return Journal(client, queue_limit=settings.queue_limit,
                   max_attempts=settings.max_attempts, retention=settings.retention,
                   lease=lease, history_limit=settings.history_limit)


def drain(agent_id: str) -> int:
    """RQ job: drain one agent's queue, with collaborators built from the worker's config."""
    return build_drainer(configuration.load()).drain(agent_id)
