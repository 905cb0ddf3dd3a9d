"""Per-agent admission: how many proxied requests one agent may have in flight at once."""

import threading
from collections import Counter


class InflightLimit:
    """Counts the requests in flight per agent in this process, up to ``limit`` each.

    PERF: per process, in memory: a stack-wide count in Redis would add a round trip to
    every proxied request, and each server process already caps its own threads.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def enter(self, agent_id: str) -> bool:
        """Count one more request to ``agent_id``; False (not counted) when at the limit."""
        with self._lock:
            if self._counts[agent_id] >= self.limit:
                return False
            self._counts[agent_id] += 1
            return True

    def leave(self, agent_id: str) -> None:
        """Count one request to ``agent_id`` less."""
        with self._lock:
            self._counts[agent_id] -= 1
            if self._counts[agent_id] <= 0:
                del self._counts[agent_id]
