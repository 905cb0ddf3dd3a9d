"""Agent state in Redis: the agent records, their names, tokens, reservations and locks.

Keys (all under :data:`agentainer.keys.PREFIX`, named in :mod:`agentainer.keys`):
    agent:{id}   HASH  spec (JSON, immutable), status, desired, container_id,
                       created_at, updated_at, last_error, restarts, and for the proxy:
                       route ("ip:port" of the app), persist ("1"/"0"), private_hash,
                       ordered ("1"/"0"), max_concurrency, on_busy, hold (seconds, ''
                       for the setting); for the idle rule: idle (statuses.Idle: '' |
                       pending | stopped | paused) and last_active (epoch ms: the last
                       admission, lease release or start; the journal's scripts write it too);
                       and for the journal's scripts webhook (the URL, "" for none: a
                       request's end is a webhook event, see agentainer.webhooks)
    waking:{id}  STRING the one wake of an idle agent under way (expiring)
    instance     STRING this installation's ID (labels its containers)
    agents       ZSET  id -> creation time (listing order)
    names        HASH  name -> id (uniqueness)
    tokens       HASH  sha256(agent token) -> id, for both an agent's invoke and manage
                       tokens (one table, so no token is two agents', whatever its scope;
                       the spec says which scope a hash has)
    reserved     HASH  id -> JSON {name, token_hashes, holder}: a deploy in progress (the
                       holder is the deploying process, see liveness.py)
    lock:{id}    STRING lifecycle lock of one agent: "<holder> <token>"
    locks:{holder} SET the locks one process holds (freed when it dies, see liveness.py)
    health:{id}  HASH  the monitor's probe results (monitor/probes.py), metrics:{id} ZSET
                       its metrics history (monitor/metrics.py): gone with the record,
                       see delete()
"""

import functools
import json
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import redis
from redis.typing import EncodableT, FieldT

from agentainer.errors import (
    AgentNotFound, Busy, Conflict, JournalFull, NameTaken, Unavailable,
)
from agentainer.agents.spec import Agent, AgentSpec, TokenScope, now
from agentainer.statuses import AgentStatus, Desired, Idle
from agentainer.keys import (
    AGENTS, COUNTERS, INSTANCE, NAMES, RESERVED, TOKENS, agent_key, health_key, lock_key,
    locks_key, metrics_key, waking_key,
)
from agentainer.names import ID_RE

LOCK_TTL = 300.0

# Update an agent's mutable fields only while its record exists, so a late writer
# (the monitor, a slow lifecycle call) never resurrects a removed agent.
_UPDATE_IF_EXISTS = """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
redis.call('hset', KEYS[1], unpack(ARGV))
return 1
"""

F = TypeVar("F", bound=Callable[..., Any])


def _unreachable(ex: redis.RedisError) -> Unavailable:
    """Return the error a Redis connection failure or timeout is reported as."""
    return Unavailable(f"Redis is unreachable: {ex}", code="redis_unavailable")


def translate_redis_errors(func: F) -> F:
    """Turn Redis connection failures into :class:`Unavailable`, and a write refused at
    ``maxmemory`` into :class:`JournalFull`.

    NOTE: the client has already retried for ``redis_wait`` (see wiring.redis_client).
    """
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as ex:
            raise _unreachable(ex) from ex
        except redis.ResponseError as ex:
            if str(ex).startswith("OOM"):
                raise JournalFull(f"Redis is at its maxmemory and refuses writes: {ex}") from ex
            raise
    return wrapper  # type: ignore[return-value]


# NOTE: redis-py types each reply as what any client could return (``bytes | str``, and
# for ZRANGE also the WITHSCORES pairs), whatever the client's ``decode_responses``.
# wiring.redis_client builds every client with the default decode_responses=False, and no
# caller asks for scores, so a reply is bytes: these casts narrow the type only, and are
# the one place that does.
def text(reply: bytes | str) -> str:
    """Return one reply of the client (bytes) as text."""
    return cast(bytes, reply).decode()


def text_hash(reply: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """Return an HGETALL reply of the client (bytes to bytes) as text to text."""
    return {text(key): text(value) for key, value in reply.items()}


def members(reply: Sequence[object]) -> Sequence[bytes]:
    """Return a ZRANGE (or ZRANGEBYSCORE) reply without scores as the members it holds."""
    return cast(Sequence[bytes], reply)


class AgentStore:
    """Reads and writes agent records, their names, tokens, reservations and locks."""

    def __init__(self, client: redis.Redis, *, holder: str, lock_timeout: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._holder = holder
        self._lock_timeout = lock_timeout
        self._clock = clock
        self._update = client.register_script(_UPDATE_IF_EXISTS)

    @translate_redis_errors
    def ping(self) -> bool:
        return bool(self._redis.ping())

    @translate_redis_errors
    def reserve(self, agent_id: str, name: str, token_hashes: Sequence[str] = ()) -> None:
        """Claim a name (and the tokens) for a new agent before its container exists.

        The reservation names this process: if it dies before :meth:`create` or
        :meth:`release`, :meth:`release_reservations` frees the name and tokens.

        Raises:
            NameTaken: another agent has the name.
            Conflict: another agent already uses one of the tokens (in either scope).
        """
        if isinstance(token_hashes, str):  # NOTE: the one-token signature of before the split
            raise TypeError("token_hashes is a sequence of hashes, not one hash")
        hashes = [h for h in token_hashes if h]
        self._redis.hset(RESERVED, agent_id, json.dumps(
            {"name": name, "token_hashes": hashes, "holder": self._holder}))
        if not self._claim(NAMES, name, agent_id):
            self._redis.hdel(RESERVED, agent_id)
            raise NameTaken(name)
        for token_hash in hashes:
            if not self._claim(TOKENS, token_hash, agent_id):
                self.release(agent_id, name, hashes)  # NOTE: only what this agent took
                raise Conflict("that token is already used by another agent; choose another",
                               code="token_in_use")

    def _claim(self, table: str, key: str, agent_id: str) -> bool:
        """Take ``key`` in ``table`` for the agent; True if it is the agent's now.

        NOTE: a resend after a restart (wiring.redis_client) finds it taken by this agent.
        """
        return bool(self._redis.hsetnx(table, key, agent_id)
                    or self._redis.hget(table, key) == agent_id.encode())

    @translate_redis_errors
    def release(self, agent_id: str, name: str, token_hashes: Sequence[str] = ()) -> None:
        """Undo :meth:`reserve` after a failed deploy (only what this agent holds)."""
        if self._redis.hget(NAMES, name) == agent_id.encode():
            self._redis.hdel(NAMES, name)
        for token_hash in token_hashes:
            if token_hash and self._redis.hget(TOKENS, token_hash) == agent_id.encode():
                self._redis.hdel(TOKENS, token_hash)
        self._redis.hdel(RESERVED, agent_id)

    @translate_redis_errors
    def release_reservations(self, holder: str) -> list[str]:
        """Release the reservations of a dead process's unfinished deploys; return the
        names freed."""
        freed = []
        for agent_id, raw in text_hash(self._redis.hgetall(RESERVED)).items():
            entry = json.loads(raw)
            if entry["holder"] != holder or self._redis.exists(agent_key(agent_id)):
                continue
            # NOTE: "token_hash" (one token) in a reservation written before the split
            hashes = entry.get("token_hashes", [entry.get("token_hash", "")])
            self.release(agent_id, entry["name"], hashes)
            freed.append(entry["name"])
        return freed

    @translate_redis_errors
    def create(self, agent: Agent) -> None:
        """Store a new agent whose name and token were reserved."""
        with self._redis.pipeline() as pipe:
            pipe.hset(agent_key(agent.id), mapping=_to_hash(agent))
            pipe.zadd(AGENTS, {agent.id: self._clock()})
            pipe.hdel(RESERVED, agent.id)
            pipe.execute()

    @translate_redis_errors
    def get(self, agent_id: str) -> Agent:
        data = self._redis.hgetall(agent_key(agent_id))
        if not data:
            raise AgentNotFound(agent_id)
        return _from_hash(agent_id, text_hash(data))

    @translate_redis_errors
    def routing(self, agent_id: str) -> tuple[AgentStatus, str]:
        """Return the agent's recorded status and its app's ``ip:port`` ("" if unknown)."""
        status, route = self._redis.hmget(agent_key(agent_id), "status", "route")
        if status is None:
            raise AgentNotFound(agent_id)
        return AgentStatus(text(status)), text(route or b"")

    @translate_redis_errors
    def resolve(self, ref: str) -> str:
        """Return the ID of the agent named or identified by ``ref``."""
        if ID_RE.match(ref):
            if self._redis.exists(agent_key(ref)):
                return ref
        else:
            agent_id = self._redis.hget(NAMES, ref)
            if agent_id:
                return text(agent_id)
        raise AgentNotFound(ref)

    @translate_redis_errors
    def all(self) -> list[Agent]:
        ids = [raw.decode() for raw in members(self._redis.zrange(AGENTS, 0, -1))]
        with self._redis.pipeline(transaction=False) as pipe:
            for agent_id in ids:
                pipe.hgetall(agent_key(agent_id))
            rows = pipe.execute()
        return [_from_hash(agent_id, text_hash(row)) for agent_id, row in zip(ids, rows) if row]

    @translate_redis_errors
    def update(self, agent_id: str, *, status: AgentStatus | None = None,
               desired: Desired | None = None, container_id: str | None = None,
               route: str | None = None, last_error: str | None = None,
               idle: Idle | None = None, active: bool = False) -> bool:
        """Set some mutable fields; return False if the agent no longer exists.

        ``active`` sets ``last_active`` to now: the idle rule counts from it.
        """
        fields: dict[str, str] = {"updated_at": now()}
        if idle is not None:
            fields["idle"] = idle.value
        if active:
            fields["last_active"] = str(int(self._clock() * 1000))
        if status is not None:
            fields["status"] = status.value
        if desired is not None:
            fields["desired"] = desired.value
        if container_id is not None:
            fields["container_id"] = container_id
        if route is not None:
            fields["route"] = route
        if last_error is not None:
            fields["last_error"] = last_error
        args = [item for pair in fields.items() for item in pair]
        return bool(self._update(keys=[agent_key(agent_id)], args=args))

    @translate_redis_errors
    def claim_wake(self, agent_id: str, ttl: float) -> bool:
        """Take the agent's one wake under way (for ``ttl`` at most); False if taken."""
        return bool(self._redis.set(waking_key(agent_id), self._holder, nx=True,
                                    px=int(ttl * 1000)))

    @translate_redis_errors
    def end_wake(self, agent_id: str) -> None:
        self._redis.delete(waking_key(agent_id))

    @translate_redis_errors
    def delete(self, agent: Agent) -> None:
        with self._redis.pipeline() as pipe:
            # NOTE: with the record go the monitor's health results and metrics history.
            pipe.delete(agent_key(agent.id), health_key(agent.id), metrics_key(agent.id))
            pipe.zrem(AGENTS, agent.id)
            pipe.hdel(NAMES, agent.name)
            for token_hash in agent.spec.token_hashes:
                pipe.hdel(TOKENS, token_hash)
            pipe.execute()

    @translate_redis_errors
    def count_restart(self, agent_id: str) -> None:
        """Add one to the agent's restart count and to the control plane's."""
        with self._redis.pipeline() as pipe:
            pipe.hincrby(agent_key(agent_id), "restarts", 1)
            pipe.hincrby(COUNTERS, "restarts", 1)
            pipe.execute()

    @translate_redis_errors
    def counters(self) -> dict[str, str]:
        """Return the shared counters and latency buckets (the journal's scripts and
        :meth:`count_restart` write them)."""
        return text_hash(self._redis.hgetall(COUNTERS))

    @translate_redis_errors
    def instance(self) -> str:
        """Return this installation's ID, created on first use (labels its containers)."""
        self._redis.set(INSTANCE, secrets.token_hex(6), nx=True)
        instance = self._redis.get(INSTANCE)
        assert instance is not None  # NOTE: set just above (NX keeps the first one)
        return text(instance)

    @translate_redis_errors
    def agent_for_token(self, token_hash: str) -> str | None:
        """Return the ID of the agent holding the token (in either scope), if any."""
        agent_id = self._redis.hget(TOKENS, token_hash)
        return text(agent_id) if agent_id else None

    @translate_redis_errors
    def token_grant(self, token_hash: str) -> tuple[str, frozenset[TokenScope]] | None:
        """Return the agent holding the token and what the token grants on it, if any.

        A token reserved by a deploy not yet stored grants nothing yet.
        """
        agent_id = self.agent_for_token(token_hash)
        if agent_id is None:
            return None
        try:
            spec = self.get(agent_id).spec
        except AgentNotFound:
            return agent_id, frozenset()
        return agent_id, spec.scopes(token_hash)

    @contextmanager
    def lock(self, agent_id: str, *, wait: bool = True) -> Iterator[bool]:
        """Serialise lifecycle operations on one agent (or another named thing) across
        processes.

        Yields True once held; with ``wait=False``, False at once when another holds it.
        The lock names this process, so if it dies holding it, :meth:`release_locks`
        frees it within seconds instead of after ``LOCK_TTL``.

        Raises:
            Busy: another operation held the lock for longer than ``lock_timeout``.
        """
        name = lock_key(agent_id)
        lock = self._redis.lock(name, timeout=LOCK_TTL, blocking_timeout=self._lock_timeout)
        try:
            acquired = lock.acquire(blocking=wait,
                                    token=f"{self._holder} {secrets.token_hex(8)}")
            if acquired:
                self._redis.sadd(locks_key(self._holder), name)
        except (redis.ConnectionError, redis.TimeoutError) as ex:
            raise _unreachable(ex) from ex
        if not acquired:
            if not wait:
                yield False
                return
            raise Busy(f"agent {agent_id} is busy with another operation; try again")
        try:
            yield True
        finally:
            try:
                lock.release()
                self._redis.srem(locks_key(self._holder), name)
            except redis.exceptions.LockError:
                pass  # NOTE: expired after LOCK_TTL, or freed for a holder taken for dead
            except (redis.ConnectionError, redis.TimeoutError):
                pass  # NOTE: it expires after LOCK_TTL, or is freed once this process dies

    @translate_redis_errors
    def release_locks(self, holder: str) -> int:
        """Free the lifecycle locks a dead process held; return how many."""
        freed = 0
        for name in self._redis.smembers(locks_key(holder)):
            value = self._redis.get(name)
            if value and text(value).startswith(holder + " "):
                freed += self._redis.delete(name)
        self._redis.delete(locks_key(holder))
        return freed


def _to_hash(agent: Agent) -> dict[FieldT, EncodableT]:
    """Return the agent's record as its hash's fields (text to text)."""
    return {
        "spec": json.dumps(agent.spec.to_dict(), separators=(",", ":")),
        "status": agent.status.value, "desired": agent.desired.value,
        "container_id": agent.container_id or "", "created_at": agent.created_at,
        "updated_at": agent.updated_at, "last_error": agent.last_error or "",
        "restarts": str(agent.restarts), "route": "",
        "persist": "1" if agent.spec.persist else "0",
        # NOTE: read by the journal's ADMIT and LEASE (order, concurrency, hold)
        "ordered": "1" if agent.spec.ordered else "0",
        "max_concurrency": str(agent.spec.max_concurrency),
        "on_busy": agent.spec.on_busy.value,
        "hold": "" if agent.spec.hold is None else str(agent.spec.hold),
        # NOTE: the proxy (journal_scripts.ADMIT) admits only the invoke token here
        "private_hash": (agent.spec.invoke_token_hash or "") if agent.spec.private else "",
        "webhook": agent.spec.webhook or "",
    }


def _from_hash(agent_id: str, fields: dict[str, str]) -> Agent:
    return Agent(
        id=agent_id, spec=AgentSpec.from_dict(json.loads(fields["spec"])),
        status=AgentStatus(fields["status"]), desired=Desired(fields["desired"]),
        container_id=fields.get("container_id") or None, created_at=fields["created_at"],
        updated_at=fields["updated_at"], last_error=fields.get("last_error") or None,
        restarts=int(fields.get("restarts") or 0), idle=Idle(fields.get("idle", "")),
    )
