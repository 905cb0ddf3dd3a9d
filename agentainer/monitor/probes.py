"""Per-agent HTTP health probes, their schedule and their results.

Key (:mod:`agentainer.keys`): ``health:{aid}`` HASH healthy ("1"/"0"), failures (consecutive),
last_check (Unix ms), status_code, message. Written only while the agent's record exists,
so a probe that ends after the agent was removed leaves nothing behind (the key goes with
the record in :meth:`AgentStore.delete`); cleared at every start of the agent.
"""

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
import urllib3

from agentainer.agents.spec import Agent, HealthCheck
from agentainer.agents.statuses import AgentStatus
from agentainer.agents.store import AgentStore, translate_redis_errors
from agentainer.errors import AgentainerError, AgentNotFound
from agentainer.keys import agent_key, health_key

logger = logging.getLogger(__name__)

POOL_SIZE = 8

# KEYS: health, agent record; ARGV: healthy, counted, last_check, status_code, message.
_RECORD = """
if redis.call('exists', KEYS[2]) == 0 then return 0 end
if ARGV[1] == '1' then
  redis.call('hset', KEYS[1], 'failures', 0)
elseif ARGV[2] == '1' then
  redis.call('hincrby', KEYS[1], 'failures', 1)
end
redis.call('hset', KEYS[1], 'healthy', ARGV[1], 'last_check', ARGV[3],
           'status_code', ARGV[4], 'message', ARGV[5])
return tonumber(redis.call('hget', KEYS[1], 'failures') or '0')
"""


@dataclass(frozen=True)
class ProbeResult:
    healthy: bool
    status_code: int | None
    message: str


def probe(http: urllib3.PoolManager, route: str, check: HealthCheck) -> ProbeResult:
    """GET the agent's health endpoint straight from its container; 2xx/3xx is healthy."""
    try:
        reply = http.request("GET", f"http://{route}{check.endpoint}", retries=False,
                             redirect=False, timeout=urllib3.Timeout(total=check.timeout))
    except urllib3.exceptions.HTTPError as ex:
        return ProbeResult(False, None, f"no answer: {ex.__class__.__name__}")
    healthy = 200 <= reply.status < 400
    return ProbeResult(healthy, reply.status, "ok" if healthy else f"HTTP {reply.status}")


class HealthRecords:
    """Keeps each agent's latest probe result and its run of consecutive failures."""

    def __init__(self, client: redis.Redis, *, clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._clock = clock
        self._record = client.register_script(_RECORD)

    @translate_redis_errors
    def record(self, agent_id: str, result: ProbeResult, *, counted: bool = True) -> int:
        """Store a probe result; return the number of consecutive failures.

        Args:
            counted: False for a failure that does not count (the agent is still starting).

        Returns:
            The consecutive failures; 0 when the agent no longer exists (nothing is stored).
        """
        keys = [health_key(agent_id), agent_key(agent_id)]
        return int(self._record(keys=keys, args=[
            "1" if result.healthy else "0", "1" if counted else "0",
            int(self._clock() * 1000), result.status_code or "", result.message]))

    @translate_redis_errors
    def get(self, agent_id: str) -> dict[str, Any] | None:
        raw = self._redis.hgetall(health_key(agent_id))
        if not raw:
            return None
        data = {key.decode(): value.decode() for key, value in raw.items()}
        return {"healthy": data.get("healthy") == "1", "failures": int(data.get("failures", 0)),
                "last_check": int(data["last_check"]) if data.get("last_check") else None,
                "status_code": int(data["status_code"]) if data.get("status_code") else None,
                "message": data.get("message", "")}

    @translate_redis_errors
    def reset(self, agent_id: str) -> None:
        """Forget the agent's probe results (it started again)."""
        self._redis.delete(health_key(agent_id))


Prober = Callable[[urllib3.PoolManager, str, HealthCheck], ProbeResult]


class Lanes:
    """A bounded thread pool that runs at most one task per agent at a time."""

    def __init__(self, workers: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._busy: set[str] = set()
        self._closed = False
        self._lock = threading.Lock()

    def submit(self, agent_id: str, task: Callable[[], None]) -> bool:
        """Queue ``task`` unless the agent's previous one still runs or the lanes were shut
        down; return True if queued."""
        with self._lock:
            if self._closed or agent_id in self._busy:
                return False
            self._busy.add(agent_id)
        try:
            self._pool.submit(self._run, agent_id, task)
        except RuntimeError:  # NOTE: shut down meanwhile (the monitor is ending)
            with self._lock:
                self._busy.discard(agent_id)
            return False
        return True

    def shutdown(self) -> None:
        """Drop the queued tasks and take no more; the running ones end on their own."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, agent_id: str, task: Callable[[], None]) -> None:
        try:
            task()
        except AgentainerError as ex:
            logger.warning("agent %s: %s", agent_id, ex.message)
        except Exception:  # noqa: BLE001 - one agent's failure must not end the pool
            logger.exception("agent %s: task failed", agent_id)
        finally:
            with self._lock:
                self._busy.discard(agent_id)


class HealthWatch:
    """Probes running agents, each on its own schedule, on a bounded pool of threads.

    A failure counts only after the agent's start grace: from a (re)start until
    ``interval x retries`` later, or until its first healthy probe if that comes sooner.
    Each start (and the monitor's first sight of a running agent) clears the failures, so
    a streak never carries over to the next run. ``on_unhealthy(agent, failures, result)``
    is called for each counted failure once failures reach the retries.
    """

    def __init__(self, records: HealthRecords, store: AgentStore,
                 on_unhealthy: Callable[[Agent, int, ProbeResult], None], *,
                 clock: Callable[[], float] = time.monotonic, prober: Prober = probe,
                 workers: int = POOL_SIZE) -> None:
        self._records = records
        self._store = store
        self._on_unhealthy = on_unhealthy
        self._clock = clock
        self._prober = prober
        self._http = urllib3.PoolManager(num_pools=256, maxsize=2)
        self._lanes = Lanes(workers, "probe")
        self._next: dict[str, float] = {}   # NOTE: only tick() (one thread) touches it
        self._grace: dict[str, float] = {}  # agent -> until when failures don't count
        self._lock = threading.Lock()

    def tick(self, agents: Iterable[Agent]) -> None:
        """Start the probes that are due; forget the schedule of agents no longer probed."""
        now = self._clock()
        probed = set()
        for agent in agents:
            check = agent.spec.health_check
            if check is None or agent.status is not AgentStatus.RUNNING:
                continue
            probed.add(agent.id)
            if agent.id not in self._next:
                self._next[agent.id] = now + check.interval
                self.started(agent, again=False)
            elif now >= self._next[agent.id] and self._lanes.submit(
                    agent.id, functools.partial(self.probe, agent)):
                self._next[agent.id] = now + check.interval
        for agent_id in self._next.keys() - probed:
            del self._next[agent_id]
            with self._lock:
                self._grace.pop(agent_id, None)

    def started(self, agent: Agent, *, again: bool = True) -> None:
        """Begin the agent's start grace and clear its failures (without ``again``, keep
        a grace already begun, and the failures with it)."""
        check = agent.spec.health_check
        if check is None:
            return
        with self._lock:
            if not again and agent.id in self._grace:
                return
            self._grace[agent.id] = self._clock() + check.interval * check.retries
        self._records.reset(agent.id)

    def forget(self, agent_id: str) -> None:
        """Drop the agent's grace (the agent was removed; its probe results went with its
        record)."""
        with self._lock:
            self._grace.pop(agent_id, None)

    def shutdown(self) -> None:
        """Stop probing (probes under way end on their own)."""
        self._lanes.shutdown()

    def probe(self, agent: Agent) -> None:
        """Probe one agent now and record the result."""
        try:
            _, route = self._store.routing(agent.id)
        except AgentNotFound:
            return  # NOTE: removed meanwhile; its health record went with it
        if not route:
            return
        check = agent.spec.health_check
        result = self._prober(self._http, route, check)
        counted = not self._in_grace(agent.id, result.healthy)  # NOTE: healthy ends it
        failures = self._records.record(agent.id, result, counted=counted)
        # NOTE: not for an uncounted failure: the count it returns is the one stored before.
        if counted and not result.healthy and failures >= check.retries:
            self._on_unhealthy(agent, failures, result)

    def _in_grace(self, agent_id: str, healthy: bool) -> bool:
        with self._lock:
            until = self._grace.get(agent_id)
            if until is None:
                return False
            if healthy or self._clock() >= until:
                del self._grace[agent_id]
                return False
            return True
