"""Webhook events, from the moment they happen to each delivery's outcome, in Redis.

An event is written where it happens, in the same atomic step: a journaled request's end
by the journal's own scripts (:data:`LUA_EVENT`, in their prelude), an agent's lifecycle
by :meth:`Webhooks.emit` (the monitor; idle-stop and wake). Both append to one stream, the
outbox, and only for an agent whose record has a ``webhook``. The workers'
:meth:`Webhooks.pump` then, in one script each, moves outbox entries to delivery records
and hands the deliveries that are due to RQ (:mod:`agentainer.webhooks.delivery` runs
them). No step holds an event only in a process's memory, so a kill -9 of any process
loses none: a delivery whose worker died is handed out again when its dispatch lease ends.

Keys (under :data:`agentainer.keys.PREFIX`, named in :mod:`agentainer.keys`):
    webhook_events   STREAM the outbox: agent, type, at (ms), data (JSON); entries leave it
                            as they become delivery records (capped at :data:`OUTBOX_MAX`)
    webhook:{eid}    HASH   one event's delivery: id, agent, type, at, data, status
                            (pending | delivered | failed), attempts, last_status,
                            last_error, created_at, updated_at, next_at, delivered_at,
                            dispatch (the fence of the current hand-out)
    webhooks:{aid}   ZSET   the agent's deliveries -> event time (ms); the newest
                            :data:`HISTORY` finished ones are kept, pending ones always
    webhook_due      ZSET   pending event ID -> when it is next due (ms); a handed-out
                            one's is pushed past its dispatch lease

Event IDs are ``msg_<agent id>_<stream entry id>``: unique (an agent ID is random, and a
stream's entry IDs only grow) and the same on every retry (the ``webhook-id`` header).
Deliveries are at least once: a worker killed after the receiver took an event but
before its outcome was recorded sends it again, under the same ID.
"""

import enum
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import redis
import rq
from rq.serializers import JSONSerializer

from agentainer.agents.store import members, text, text_hash, translate_redis_errors
from agentainer.keys import WEBHOOK_DUE, lua_names, webhook_key, webhooks_key

logger = logging.getLogger(__name__)

QUEUE = "agentainer-webhooks"
DELIVER_JOB = "agentainer.webhooks.delivery.deliver"
OUTBOX_MAX = 100_000  # NOTE: approximate cap of undelivered outbox entries (XADD MAXLEN ~)
HISTORY = 100         # finished deliveries kept per agent (pending ones are never dropped)
BATCH = 200           # outbox entries moved, or deliveries handed out, per script call
PUMP_BATCHES = 10     # NOTE: outbox batches per pump: a backlog drains over a few pumps
LEASE_GRACE = 30.0    # NOTE: a hand-out lives timeout + this: time in RQ's queue included


class EventType(enum.StrEnum):
    """What a webhook reports (the body's ``type``)."""

    REQUEST_COMPLETED = "request.completed"  # the journal: a response was recorded
    REQUEST_FAILED = "request.failed"        # the journal: out of attempts (dead letter)
    AGENT_CRASHED = "agent.crashed"          # the monitor: it stopped, wanted running
    AGENT_RESTARTED = "agent.restarted"      # the monitor: an auto-restart was made
    AGENT_FAILED = "agent.failed"            # the monitor: given up (crash loop, refused)
    AGENT_IDLE = "agent.idle"                # stopped for being idle
    AGENT_WOKEN = "agent.woken"              # started again by a request


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"      # not yet taken by the receiver; retried until attempts run out
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"        # every attempt failed


# Shared with the journal's scripts (their prelude, after K): append an event to the
# outbox if the agent has a webhook; the request form reads the request's record.
LUA_EVENT = f"""
local REQUEST_COMPLETED = '{EventType.REQUEST_COMPLETED}'
local REQUEST_FAILED = '{EventType.REQUEST_FAILED}'
local function has_webhook(aid)
  return (redis.call('hget', K.agent..aid, 'webhook') or '') ~= ''
end
local function webhook_event(aid, kind, now, data)
  redis.call('xadd', K.webhook_events, 'MAXLEN', '~', {OUTBOX_MAX}, '*',
             'agent', aid, 'type', kind, 'at', now, 'data', data)
end
local function request_event(aid, rid, kind, now)
  if not has_webhook(aid) then return end
  local r = redis.call('hmget', K.req..rid, 'status', 'attempts', 'resp_status', 'error')
  webhook_event(aid, kind, now, cjson.encode({{request_id = rid, status = r[1],
    attempts = tonumber(r[2]), response_status = tonumber(r[3]),
    error = (r[4] ~= '' and r[4]) or nil}}))
end
"""

# An event of an agent: ARGV aid, type, now_ms, data (JSON). 1 if the agent has a webhook.
_EMIT = lua_names() + LUA_EVENT + """
if not has_webhook(ARGV[1]) then return 0 end
webhook_event(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return 1
"""

# Move outbox entries to delivery records, due now: ARGV now_ms, batch, history. An entry
# of an agent removed since is dropped. Returns how many entries it took from the outbox.
_INGEST = lua_names() + """
local now, history = ARGV[1], tonumber(ARGV[3])
local entries = redis.call('xrange', K.webhook_events, '-', '+', 'COUNT', ARGV[2])
for _, entry in ipairs(entries) do
  local f = {}
  for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
  local eid = 'msg_'..f.agent..'_'..entry[1]
  local dkey, index = K.webhook..eid, K.webhooks..f.agent
  if redis.call('exists', K.agent..f.agent) == 1 and redis.call('exists', dkey) == 0 then
    redis.call('hset', dkey, 'id', eid, 'agent', f.agent, 'type', f.type, 'at', f.at,
               'data', f.data, 'status', 'pending', 'attempts', 0, 'dispatch', 0,
               'created_at', now, 'updated_at', now, 'next_at', now)
    redis.call('zadd', index, f.at, eid)
    redis.call('zadd', K.webhook_due, now, eid)
    local over = redis.call('zcard', index) - history
    if over > 0 then
      for _, old in ipairs(redis.call('zrange', index, 0, over - 1)) do
        if redis.call('hget', K.webhook..old, 'status') ~= 'pending' then
          redis.call('del', K.webhook..old)
          redis.call('zrem', index, old)
        end
      end
    end
  end
  redis.call('xdel', K.webhook_events, entry[1])
end
return #entries
"""

# Hand out the deliveries that are due: ARGV now_ms, lease_ms, batch. Each one's dispatch
# fence counts up and its due time moves past the lease. Returns event ID, fence pairs.
_DISPATCH = lua_names() + """
local out = {}
local due = redis.call('zrangebyscore', K.webhook_due, '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, eid in ipairs(due) do
  local dkey = K.webhook..eid
  if redis.call('hget', dkey, 'status') == 'pending' then
    out[#out + 1] = eid
    out[#out + 1] = tostring(redis.call('hincrby', dkey, 'dispatch', 1))
    redis.call('zadd', K.webhook_due, ARGV[1] + ARGV[2], eid)
  else
    redis.call('zrem', K.webhook_due, eid)
  end
end
return out
"""

# Begin an attempt: ARGV eid, dispatch, now_ms, lease_ms. The event's fields if the
# hand-out is still the current one (its lease pushed forward), else false.
_START = lua_names() + """
local dkey = K.webhook..ARGV[1]
local r = redis.call('hmget', dkey, 'status', 'dispatch')
if r[1] ~= 'pending' or r[2] ~= ARGV[2] then return false end
redis.call('zadd', K.webhook_due, ARGV[3] + ARGV[4], ARGV[1])
return redis.call('hmget', dkey, 'agent', 'type', 'at', 'data', 'attempts')
"""

# Record an attempt: ARGV eid, dispatch, attempts before it, now_ms, ok ('1'/'0'), status
# code ('' for none), error, max_attempts, retry delay (ms). Returns the delivery's status
# after it, or 'stale' (another hand-out took over, or this ran already).
_FINISH = lua_names() + """
local dkey = K.webhook..ARGV[1]
local r = redis.call('hmget', dkey, 'status', 'dispatch', 'attempts')
if r[1] ~= 'pending' or r[2] ~= ARGV[2] or r[3] ~= ARGV[3] then return 'stale' end
local attempts = redis.call('hincrby', dkey, 'attempts', 1)
redis.call('hset', dkey, 'last_status', ARGV[6], 'last_error', ARGV[7], 'updated_at', ARGV[4])
if ARGV[5] == '1' then
  redis.call('hset', dkey, 'status', 'delivered', 'delivered_at', ARGV[4])
  redis.call('hdel', dkey, 'next_at')
  redis.call('zrem', K.webhook_due, ARGV[1])
  return 'delivered'
end
if attempts >= tonumber(ARGV[8]) then
  redis.call('hset', dkey, 'status', 'failed')
  redis.call('hdel', dkey, 'next_at')
  redis.call('zrem', K.webhook_due, ARGV[1])
  return 'failed'
end
local next_at = ARGV[4] + ARGV[9]
redis.call('hset', dkey, 'next_at', next_at)
redis.call('zadd', K.webhook_due, next_at, ARGV[1])
return 'pending'
"""


def iso_time(millis: int) -> str:
    """Return epoch milliseconds as ISO-8601 UTC (``2026-12-02T05:51:29.123Z``)."""
    stamp = datetime.fromtimestamp(millis / 1000, timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Attempt:
    """One event as an attempt to deliver it sees it (:meth:`Webhooks.start`)."""

    id: str
    dispatch: int
    agent_id: str
    type: str
    at: int          # when it happened (ms)
    data: dict[str, Any]
    attempts: int    # made before this one

    def body(self, agent_name: str) -> bytes:
        """Return the JSON body: the same on every attempt (only the headers' timestamp
        and signature change)."""
        return json.dumps({"type": self.type, "timestamp": iso_time(self.at),
                           "data": {"agent_id": self.agent_id, "agent_name": agent_name,
                                    **self.data}}, separators=(",", ":")).encode()


class Webhooks:
    """Emits webhook events, moves them to deliveries, hands those to RQ, and reads their
    outcomes (see the module docstring)."""

    def __init__(self, client: redis.Redis, *, lease: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._queue = rq.Queue(QUEUE, connection=client, serializer=JSONSerializer)
        self._lease_ms = int(lease * 1000)
        self._job_timeout = int(lease) + 1
        self._clock = clock
        self._emit = client.register_script(_EMIT)
        self._ingest = client.register_script(_INGEST)
        self._dispatch = client.register_script(_DISPATCH)
        self._start = client.register_script(_START)
        self._finish = client.register_script(_FINISH)

    def _now(self) -> int:
        return int(self._clock() * 1000)

    def emit(self, agent_id: str, event: EventType, data: dict[str, Any] | None = None
             ) -> bool:
        """Put an event of the agent in the outbox, if it has a webhook; say whether it did.

        ``data`` (JSON values) goes into the body's ``data`` beside ``agent_id`` and
        ``agent_name``. Never raises: the monitor's loops call it on their way; if Redis
        is unreachable the event is lost, and logged.
        """
        try:
            return bool(self._emit(args=[agent_id, event.value, self._now(),
                                         json.dumps(data or {})]))
        except redis.RedisError as ex:
            logger.warning("agent %s: webhook event %s lost: %s", agent_id, event.value, ex)
            return False

    @translate_redis_errors
    def pump(self) -> int:
        """Move the outbox to delivery records, then enqueue a delivery job for each one
        due; return how many jobs were enqueued (a worker's thread, every PUMP_INTERVAL).

        NOTE: a job lost before it ran (a kill -9 here or of its worker) is handed out
        again once its lease ends; a job that runs late finds its hand-out replaced and
        does nothing (the ``dispatch`` fence).
        """
        for _ in range(PUMP_BATCHES):
            if self._ingest(args=[self._now(), BATCH, HISTORY]) < BATCH:
                break
        reply = self._dispatch(args=[self._now(), self._lease_ms, BATCH])
        pairs = [text(part) for part in reply]
        for event_id, dispatch in zip(pairs[::2], pairs[1::2]):
            self._queue.enqueue_call(DELIVER_JOB, args=(event_id, int(dispatch)),
                                     timeout=self._job_timeout, result_ttl=0,
                                     failure_ttl=3600)
        return len(pairs) // 2

    @translate_redis_errors
    def start(self, event_id: str, dispatch: int) -> Attempt | None:
        """Begin an attempt under hand-out ``dispatch``; None if it is no longer current
        (delivered, failed, removed, or handed out again)."""
        reply = self._start(args=[event_id, dispatch, self._now(), self._lease_ms])
        if not reply:
            return None
        agent_id, kind, at, data, attempts = (text(part) for part in reply)
        return Attempt(event_id, dispatch, agent_id, kind, int(at), json.loads(data),
                       int(attempts))

    @translate_redis_errors
    def finish(self, attempt: Attempt, *, ok: bool, status: int | None, error: str,
               max_attempts: int, retry_in: float) -> str:
        """Record an attempt's outcome; return the delivery's status after it (or
        ``stale``: another hand-out took over meanwhile)."""
        return text(self._finish(args=[
            attempt.id, attempt.dispatch, attempt.attempts, self._now(), "1" if ok else "0",
            "" if status is None else status, error, max_attempts, int(retry_in * 1000)]))

    @translate_redis_errors
    def deliveries(self, agent_id: str, *, limit: int = HISTORY) -> list[dict[str, Any]]:
        """Return the agent's deliveries, newest event first."""
        ids = [text(eid) for eid in members(
            self._redis.zrevrange(webhooks_key(agent_id), 0, limit - 1))]
        with self._redis.pipeline(transaction=False) as pipe:
            for event_id in ids:
                pipe.hgetall(webhook_key(event_id))
            rows = pipe.execute()
        return [_outcome(text_hash(row)) for row in rows if row]

    @translate_redis_errors
    def purge(self, agent_id: str) -> None:
        """Delete every delivery record of a removed agent.

        NOTE: its events still in the outbox are dropped when moved (its record is gone).
        """
        index = webhooks_key(agent_id)
        ids = [text(eid) for eid in members(self._redis.zrange(index, 0, -1))]
        with self._redis.pipeline() as pipe:
            for event_id in ids:
                pipe.delete(webhook_key(event_id))
            if ids:
                pipe.zrem(WEBHOOK_DUE, *ids)
            pipe.delete(index)
            pipe.execute()


def _outcome(fields: dict[str, str]) -> dict[str, Any]:
    """Return a delivery record as the API shows it (times in epoch ms, like requests')."""
    def millis(name: str) -> int | None:
        return int(fields[name]) if fields.get(name) else None

    return {"id": fields["id"], "type": fields["type"], "status": fields["status"],
            "attempts": int(fields.get("attempts") or 0),
            "last_status": int(fields["last_status"]) if fields.get("last_status") else None,
            "last_error": fields.get("last_error") or None,
            "occurred_at": millis("at"), "created_at": millis("created_at"),
            "updated_at": millis("updated_at"), "next_at": millis("next_at"),
            "delivered_at": millis("delivered_at"), "data": json.loads(fields["data"])}
