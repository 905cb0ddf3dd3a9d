"""Capped, jittered exponential backoff: the one delay formula for retries.

Replay (a failed delivery waits before the next), the monitor's auto-restart (a crashed
agent waits before the next start), the monitor's own loops (one that broke waits
before it runs again) and a drain polling a starting app all use :func:`backoff`.
"""

import random
from collections.abc import Callable


def backoff(attempt: int, *, base: float, cap: float,
            rand: Callable[[], float] = random.random) -> float:
    """Return the delay in seconds before retry number ``attempt`` (1-based).

    The delay doubles from ``base`` (the first retry's) up to ``cap``, i.e.
    ``min(cap, base * 2**(attempt - 1))``, then is jittered to 50-100 % of that
    ("equal jitter": a floor of half the delay, spread so retries do not line up).
    ``rand`` returns a number in [0, 1) (``random.random``; tests pass a fixed one).
    """
    return min(cap, base * 2 ** (attempt - 1)) * (0.5 + rand() / 2)
