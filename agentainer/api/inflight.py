"""Per-process limits: how many proxied requests one agent may have in flight at once, and
slots of other things each holding a worker thread (held requests, follows)."""

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


class Slots:
    """At most ``limit`` of something at once in this process; past it, none is given.

    NOTE: for what holds one of waitress's worker threads while it lasts (a held request,
    a follow), so it cannot take every thread from the rest.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    def enter(self) -> bool:
        """Take a slot; False (none taken) when all are in use."""
        return self._slots.acquire(blocking=False)

    def leave(self) -> None:
        self._slots.release()
