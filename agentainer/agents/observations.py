"""What the monitor observes of each agent, kept in Redis: its latest probe result and
run of failures, and its sampled resource metrics.

Keys (:mod:`agentainer.keys`):

- ``health:{aid}`` HASH healthy ("1"/"0"), failures (consecutive), last_check (Unix ms),
  status_code, message; cleared at every start of the agent.
- ``metrics:{aid}`` ZSET sample JSON by Unix ms, trimmed to a day.

Both are written only while the agent's record exists, so a probe or a sample that ends
after the agent was removed leaves nothing behind (the keys go with the record in
:meth:`AgentStore.delete`).
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from agentainer.agents.store import members, text_hash, translate_redis_errors
from agentainer.keys import agent_key, health_key, metrics_key

HISTORY_SPAN = 24 * 3600.0
HISTORY_MAX = 8640  # NOTE: a day of 10-second samples

# KEYS: health, agent record; ARGV: healthy, counted, last_check, status_code, message.
_RECORD_PROBE = """
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


# KEYS: history, agent record; ARGV: sample, timestamp, cutoff, max samples, TTL seconds.
_RECORD_SAMPLE = """
if redis.call('exists', KEYS[2]) == 0 then return 0 end
redis.call('zadd', KEYS[1], ARGV[2], ARGV[1])
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[3])
redis.call('zremrangebyrank', KEYS[1], 0, -tonumber(ARGV[4]) - 1)
redis.call('expire', KEYS[1], ARGV[5])
return 1
"""


@dataclass(frozen=True)
class ProbeResult:
    healthy: bool
    status_code: int | None
    message: str


class HealthRecords:
    """Keeps each agent's latest probe result and its run of consecutive failures."""

    def __init__(self, client: redis.Redis, *, clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._clock = clock
        self._record = client.register_script(_RECORD_PROBE)

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
        data = text_hash(raw)
        return {"healthy": data.get("healthy") == "1", "failures": int(data.get("failures", 0)),
                "last_check": int(data["last_check"]) if data.get("last_check") else None,
                "status_code": int(data["status_code"]) if data.get("status_code") else None,
                "message": data.get("message", "")}

    @translate_redis_errors
    def reset(self, agent_id: str) -> None:
        """Forget the agent's probe results (it started again)."""
        self._redis.delete(health_key(agent_id))


class MetricsHistory:
    """Each agent's sampled metrics, trimmed to a day."""

    def __init__(self, client: redis.Redis, *, clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._clock = clock
        self._record = client.register_script(_RECORD_SAMPLE)

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
        rows = members(self._redis.zrangebyscore(metrics_key(agent_id), start, "+inf"))
        return [json.loads(row) for row in rows]
