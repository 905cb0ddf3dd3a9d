"""The auto-restart policy: capped, jittered exponential backoff and the crash-loop verdict.

Every restart *attempt* counts, whether or not the start succeeds: a start that keeps
failing (image gone, bind mount missing) backs off and ends ``failed`` like a crash loop.
The n-th attempt within ``window`` waits :func:`agentainer.backoff.backoff` of ``n``
(``min(cap, base * 2**(n-1))``, jittered to 50-100 %); once ``limit`` attempts fall
within the window the policy gives up.
"""

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from agentainer.backoff import backoff


@dataclass
class RestartPolicy:
    """Capped, jittered exponential backoff that gives up on a crash loop."""

    base: float
    cap: float
    limit: int
    window: float
    clock: Callable[[], float] = time.monotonic
    rand: Callable[[], float] = random.random
    # NOTE: the events, probe and control threads all read or count attempts.
    _history: dict[str, deque[float]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def next_delay(self, agent_id: str) -> float | None:
        """Return how long to wait before the next restart attempt, or None to give up."""
        with self._lock:
            attempts = len(self._recent(agent_id))
        if attempts >= self.limit:
            return None
        return backoff(attempts + 1, base=self.base, cap=self.cap, rand=self.rand)

    def attempted(self, agent_id: str) -> None:
        """Count a restart attempt made now (before it runs, so a quick crash sees it)."""
        with self._lock:
            self._recent(agent_id).append(self.clock())

    def forget(self, agent_id: str) -> None:
        """Drop the agent's attempts (given up on, or removed)."""
        with self._lock:
            self._history.pop(agent_id, None)

    def verdict(self, reason: str) -> str:
        """Return the ``failed`` reason for a crash loop whose last failure was ``reason``."""
        return (f"crash loop: {self.limit} restart attempts within {self.window:.0f}s; "
                f"last: {reason}")

    def _recent(self, agent_id: str) -> deque[float]:
        recent = self._history.setdefault(agent_id, deque())
        while recent and recent[0] < self.clock() - self.window:
            recent.popleft()
        return recent
