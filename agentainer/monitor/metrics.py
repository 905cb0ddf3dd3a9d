"""Agent resource metrics (sampled into a bounded history) and control-plane counters.

Keys (:mod:`agentainer.keys`): ``metrics:{aid}`` ZSET sample JSON by Unix ms (written only
while the agent's record exists, so a late sample never outlives a removed agent: the key
goes with the record in :meth:`AgentStore.delete`); ``counters`` HASH of counters and
latency-histogram buckets, written by the journal's Lua scripts and the monitor, so every
process's work shows in one ``/metrics`` (any server answers it).
"""

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
)

from agentainer.journal.journal import LATENCY_BUCKETS
from agentainer.agents.store import AgentStore, translate_redis_errors
from agentainer.keys import COUNTERS, agent_key, metrics_key

HISTORY_SPAN = 24 * 3600.0
HISTORY_MAX = 8640  # NOTE: a day of 10-second samples
COUNTER_HELP = (
    ("proxied", "agentainer_proxied_requests", "requests forwarded live to a running agent"),
    ("queued", "agentainer_queued_requests", "requests queued for an agent that could not "
                                             "take them"),
    ("replayed", "agentainer_replayed_requests", "queued requests delivered by a worker"),
    ("failed", "agentainer_failed_requests", "requests that exhausted their delivery "
                                             "attempts (dead letter)"),
    ("restarts", "agentainer_agent_restarts", "agent restarts made by the monitor"),
)

# KEYS: history, agent record; ARGV: sample, timestamp, cutoff, max samples, TTL seconds.
_RECORD = """
if redis.call('exists', KEYS[2]) == 0 then return 0 end
redis.call('zadd', KEYS[1], ARGV[2], ARGV[1])
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[3])
redis.call('zremrangebyrank', KEYS[1], 0, -tonumber(ARGV[4]) - 1)
redis.call('expire', KEYS[1], ARGV[5])
return 1
"""


class MetricsHistory:
    """Each agent's sampled metrics, trimmed to a day."""

    def __init__(self, client: redis.Redis, *, clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._clock = clock
        self._record = client.register_script(_RECORD)

    @translate_redis_errors
    def record(self, agent_id: str, sample: dict[str, Any]) -> None:
        """Add a sample to the agent's history (if the agent still exists) and trim it."""
        keys = [metrics_key(agent_id), agent_key(agent_id)]
        self._record(keys=keys, args=[
            json.dumps(sample, separators=(",", ":")), sample["timestamp"],
            int((self._clock() - HISTORY_SPAN) * 1000), HISTORY_MAX, int(HISTORY_SPAN)])

    @translate_redis_errors
    def since(self, agent_id: str, seconds: float) -> list[dict[str, Any]]:
        start = int((self._clock() - seconds) * 1000)
        rows = self._redis.zrangebyscore(metrics_key(agent_id), start, "+inf")
        return [json.loads(row) for row in rows]


class ControlPlaneCollector:
    """A Prometheus collector reading the shared counters and the agents' state."""

    def __init__(self, client: redis.Redis, store: AgentStore,
                 queue_length: Callable[[str], int], stored_bytes: Callable[[], int]) -> None:
        self._redis = client
        self._store = store
        self._queue_length = queue_length
        self._stored_bytes = stored_bytes

    def collect(self) -> Iterator[Metric]:
        raw = {key.decode(): value.decode() for key, value in self._redis.hgetall(COUNTERS).items()}
        for key, name, help_text in COUNTER_HELP:
            yield CounterMetricFamily(name, help_text, value=float(raw.get(key, 0)))
        agents = self._store.all()
        by_status = GaugeMetricFamily("agentainer_agents", "agents by status", labels=["status"])
        for status in ("created", "running", "paused", "stopped", "failed"):
            by_status.add_metric([status], sum(1 for a in agents if a.status.value == status))
        yield by_status
        depth = GaugeMetricFamily("agentainer_queue_depth", "queued requests per agent",
                                  labels=["agent"])
        for agent in agents:
            depth.add_metric([agent.name], self._queue_length(agent.id))
        yield depth
        yield GaugeMetricFamily("agentainer_journal_bytes",
                                "bytes the request journal holds (against journal_max_bytes)",
                                value=float(self._stored_bytes()))
        buckets, cumulative = [], 0
        for bound in LATENCY_BUCKETS:
            cumulative += int(raw.get(f"latency_le_{bound}", 0))
            buckets.append((str(bound), cumulative))
        cumulative += int(raw.get("latency_le_inf", 0))
        buckets.append(("+Inf", cumulative))
        yield HistogramMetricFamily(
            "agentainer_proxy_latency_seconds",
            "time from a request's arrival to the agent's response headers (journaled requests)",
            buckets=buckets, sum_value=float(raw.get("latency_sum", 0)))
