"""Process liveness: who holds work, and whether it still lives.

Every server, worker and monitor process is a *holder* with an ID of its own
(:func:`new_holder`). It keeps a heartbeat key in Redis that expires ``timeout`` seconds
after its last beat, and beats ``BEATS_PER_TIMEOUT`` times per timeout from a daemon
thread (a :class:`~agentainer.periodic.Periodic` its composition root makes). Leases,
drain claims, lifecycle locks and name reservations name their holder; once a holder's
heartbeat has expired, the janitor takes back what it held (:mod:`agentainer.journal.janitor`),
within seconds rather than when a lease's deadline passes.

Keys (under :data:`agentainer.keys.PREFIX`, named in :mod:`agentainer.keys`):
    holders          SET    every holder that may hold something
    alive:{holder}   STRING the heartbeat, expiring ``timeout`` after the last beat

NOTE: the expiry is Redis's own clock, so holders on different hosts need no common clock.
"""

import os
import secrets
import socket

import redis

from agentainer.agents.store import text, translate_redis_errors
from agentainer.keys import HOLDERS, alive_key

BEATS_PER_TIMEOUT = 5


def new_holder(kind: str) -> str:
    """Return a fresh holder ID for this process: kind, host, PID and a random part."""
    # NOTE: it is the RQ worker's name too, so no ':' (RQ's key separator)
    return f"{kind}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Liveness:
    """Heartbeats, and the holders whose heartbeat stopped."""

    def __init__(self, client: redis.Redis, *, timeout: float) -> None:
        self._redis = client
        self._timeout_ms = max(1000, int(timeout * 1000))

    @property
    def interval(self) -> float:
        """Seconds between two beats."""
        return self._timeout_ms / 1000 / BEATS_PER_TIMEOUT

    @translate_redis_errors
    def beat(self, holder: str) -> None:
        """Say that ``holder`` lives, for ``timeout`` more seconds."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(alive_key(holder), "1", px=self._timeout_ms)
            pipe.sadd(HOLDERS, holder)
            pipe.execute()

    @translate_redis_errors
    def dead(self) -> list[str]:
        """Return the holders whose heartbeat has expired."""
        holders = sorted(text(raw) for raw in self._redis.smembers(HOLDERS))
        with self._redis.pipeline(transaction=False) as pipe:
            for holder in holders:
                pipe.exists(alive_key(holder))
            alive = pipe.execute()
        return [holder for holder, up in zip(holders, alive) if not up]

    @translate_redis_errors
    def forget(self, holder: str) -> None:
        """Drop a dead holder once what it held was taken back."""
        self._redis.srem(HOLDERS, holder)
