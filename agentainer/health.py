"""Per-agent HTTP health probes and their results.

Key: ``agentainer:health:{aid}`` HASH healthy ("1"/"0"), failures (consecutive),
last_check (Unix ms), status_code, message.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import urllib3

from agentainer.models import HealthCheck
from agentainer.store import PREFIX, translate_redis_errors


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

    @translate_redis_errors
    def record(self, agent_id: str, result: ProbeResult) -> int:
        """Store a probe result; return the number of consecutive failures."""
        key = f"{PREFIX}health:{agent_id}"
        with self._redis.pipeline() as pipe:
            if result.healthy:
                pipe.hset(key, "failures", 0)
            else:
                pipe.hincrby(key, "failures", 1)
            pipe.hset(key, mapping={"healthy": "1" if result.healthy else "0",
                                    "last_check": int(self._clock() * 1000),
                                    "status_code": result.status_code or "",
                                    "message": result.message})
            pipe.hget(key, "failures")
            return int(pipe.execute()[-1])

    @translate_redis_errors
    def get(self, agent_id: str) -> dict[str, Any] | None:
        raw = self._redis.hgetall(f"{PREFIX}health:{agent_id}")
        if not raw:
            return None
        data = {key.decode(): value.decode() for key, value in raw.items()}
        return {"healthy": data.get("healthy") == "1", "failures": int(data.get("failures", 0)),
                "last_check": int(data["last_check"]) if data.get("last_check") else None,
                "status_code": int(data["status_code"]) if data.get("status_code") else None,
                "message": data.get("message", "")}

    @translate_redis_errors
    def reset(self, agent_id: str) -> None:
        self._redis.delete(f"{PREFIX}health:{agent_id}")
