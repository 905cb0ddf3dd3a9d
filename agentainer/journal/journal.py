"""The request journal: every proxied request, from arrival to exactly one terminal state.

Keys (all under :data:`agentainer.keys.PREFIX`, named in :mod:`agentainer.keys`):
    req:{rid}          HASH   the record: request, status, attempts, captured response,
                              size (bytes counted against the budgets), holder
    queue:{aid}        LIST   queued request IDs of one agent, oldest first
    reqs:{aid}         ZSET   every listed request ID of one agent -> arrival (ms)
    leases             ZSET   in-flight request ID -> deadline (ms)
    held:{holder}      SET    in-flight request IDs leased to one process (liveness.py)
    queued             SET    agents whose queue may hold requests (the janitor's worklist)
    idem:{aid}:{key}   STRING idempotency key -> request ID
    ticket:{aid}       STRING the last replay lease's ticket and request ID (repeats)
    flying:{aid}       SET    in-flight request IDs of one agent (max_concurrency, the idle rule)
    journal_bytes      STRING bytes of every record (``journal_max_bytes``)
    queue_bytes        HASH   agent -> bytes of its queued requests (``queue_max_bytes``)
    bodies             ZSET   completed request IDs that still hold bodies -> completion (ms)
    respstream:{rid}   STREAM the live capture of a response being delivered (live.py);
                              expiring 5 s after COMPLETE, as the record then holds the body

Statuses: ``queued`` -> ``in_flight`` -> ``completed`` | back to ``queued`` | ``failed``;
``queued`` -> ``cancelled``; ``queued`` | ``failed`` -> ``completed`` (a late answer, see
below); ``failed`` | ``cancelled`` -> ``queued`` (requeued by hand). Every state change is
one Lua script (in :mod:`agentainer.journal.scripts`), so a record is never half-updated
and a request is never both queued and leased.

Leases are fenced: each time a record goes in_flight its ``lease`` field counts up, and
``complete``, ``retry`` and ``renew`` act only for the holder of the current lease. Once
another lease is taken, an earlier holder cannot touch the request. ``retry`` and
``renew`` also need the request in flight, so a holder whose lease expired and was swept
can do neither; but its ``complete`` still records the answer while nobody has leased
the request since (it is ``queued`` again, and leaves its queue, or ``failed``): that
saves a redelivery. A ``completed`` or ``cancelled`` request is never completed again.

Every lease names its holder, a process that keeps a heartbeat
(:mod:`agentainer.journal.liveness`): when a holder dies, :meth:`Journal.reap` gives its
leases back at once, without waiting for their deadlines, which stay as the backstop for a
live holder that never finishes.

Storage is bounded: admission refuses a request that would take the journal past
``max_bytes`` or its agent's queue past ``queue_limit`` / ``queue_max_bytes``; finished
records are deleted after ``retention`` (or beyond ``history_limit``), and completed ones
lose their bodies after ``body_retention``.
"""

import enum
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
from hiredis import pack_command
from redis.commands.core import Script
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from agentainer.agents.store import members, text, translate_redis_errors
from agentainer.errors import Conflict, NotFound, QueueFull
from agentainer.journal import scripts
from agentainer.journal.live import LiveCapture, Published
from agentainer.keys import (
    BODIES, JOURNAL_BYTES, LEASES, QUEUE_BYTES, QUEUED, flying_key, idempotency_pattern,
    queue_key, request_key, requests_key, response_stream_key, ticket_key,
)
from agentainer.statuses import AgentStatus, Desired, RequestStatus


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FIRST_LEASE = 1  # NOTE: the lease a forwarded admission holds (a new record's first)
RECORD_OVERHEAD = 512  # NOTE: bytes counted per record beyond its payload (fields, index)
# NOTE: seconds a read of an in-flight record waits for it to end (its answer may be on its
# way: completions.py); a request still in flight after that is reported so
SETTLE = 0.1
SUMMARY_FIELDS = ("id", "agent", "method", "path", "query", "status", "attempts",
                  "created_at", "updated_at", "error", "resp_status", "idempotency_key")


class Outcome(enum.StrEnum):
    """What admission decided for a proxied request (see :meth:`Journal.admit`)."""

    FORWARD = "forward"        # journaled in flight: forward it now
    QUEUED = "queued"          # journaled in the agent's queue
    DIRECT = "direct"          # persistence off: forward it, journal nothing
    IDEMPOTENT = "idempotent"  # an earlier request with the same key answers for it
    OVER = "over"              # refused: the journal is at its byte budget
    FULL = "full"              # refused: the agent's queue is full
    BUSY = "busy"              # refused: at max_concurrency, and on_busy is reject
    FORBIDDEN = "forbidden"    # refused: a private agent, without its invoke token
    MISSING = "missing"        # refused: no such agent


class Wait(enum.StrEnum):
    """Why an admitted request waits in its agent's queue (a QUEUED admission)."""

    DOWN = "down"        # the agent is not running
    BACKLOG = "backlog"  # it is, but requests queued before this one come first (ordered)
    BUSY = "busy"        # it is, but has max_concurrency requests in flight


class AtCapacity(Exception):
    """The agent has ``max_concurrency`` requests in flight: nothing was leased.

    ``completion``: what :meth:`Journal.complete_and_lease` recorded before the lease.
    """

    def __init__(self, agent_id: str, completion: "Completion | None" = None) -> None:
        super().__init__(agent_id)
        self.completion = completion


class Completion(enum.StrEnum):
    """What :meth:`Journal.complete` recorded."""

    COMPLETED = "completed"  # the response is the request's terminal state
    STALE = "stale"          # nothing: another lease was taken since, or it had ended
    MISSING = "missing"      # nothing: the record is gone


class Retry(enum.StrEnum):
    """Where :meth:`Journal.retry` left a request."""

    QUEUED = "queued"    # back in its queue
    FAILED = "failed"    # out of attempts: failed (dead letter)
    STALE = "stale"      # untouched: the caller's lease is not the current one
    FULL = "full"        # a new arrival found no room in its queue: taken back, unjournaled
    MISSING = "missing"  # the record is gone


@dataclass(frozen=True)
class Admission:
    """What the proxy must do with a request (see :meth:`Journal.admit`)."""

    outcome: Outcome
    agent_id: str = ""
    route: str = ""         # "ip:port" of a running agent's app
    agent_status: AgentStatus | None = None      # the agent's (DIRECT, QUEUED)
    desired: Desired | None = None               # the agent's (QUEUED)
    wait: Wait | None = None                     # why it is queued (QUEUED)
    hold: float | None = None     # the agent's (FORWARD, QUEUED); None: the hold setting
    request_status: RequestStatus | None = None  # the earlier request's (IDEMPOTENT)
    request_id: str = ""
    position: int = 0
    fingerprint: str = ""   # the earlier request's (IDEMPOTENT)
    strip_authorization: bool = False
    lease: int = 0          # the lease a forwarded request holds (FIRST_LEASE)
    idle: bool = False      # the idle rule stopped or paused the agent: wake it (QUEUED)

    @property
    def journaled(self) -> bool:
        """Whether the request is journaled in flight (and must end in the journal)."""
        return self.outcome is Outcome.FORWARD


@dataclass(frozen=True)
class Answer:
    """An agent's response to one attempt, as :meth:`Journal.write` records it."""

    request_id: str
    lease: int        # the lease the deliverer holds (:attr:`Admission.lease`, or a record's)
    status: int
    headers: list[tuple[str, str]]  # the ones passed on (proxy.relayable)
    body: bytes       # the captured part (capture_limit)
    truncated: bool   # more came than was captured
    error: str = ""   # a note (e.g. the client went before the end)
    replayed: bool = False           # delivered from the queue (counted as replayed)
    latency: float | None = None     # seconds from arrival to the headers (the histogram)


@dataclass(frozen=True)
class IncomingRequest:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]      # as sent, but Authorization (proxy.stored_headers)
    body: bytes
    # the caller's Authorization, journaled unless it is an Agentainer token (dropped then)
    authorization: str = ""
    idempotency_key: str = ""
    fingerprint: str = ""   # method, path, query and body, for a request with a key


def allocated(length: int) -> int:
    """Return the bytes Redis's allocator (jemalloc) takes for a value of ``length`` bytes.

    NOTE: a large value is rounded up to its size class (four per power of two), so a
    10 MiB body takes 12 MiB: the budgets count what Redis holds, not the payload.
    """
    length += 16  # NOTE: the string's header and terminator
    if length <= 4096:
        return length
    spacing = 1 << (length.bit_length() - 3)
    return -(-length // spacing) * spacing


def new_request_id() -> str:
    return f"req-{os.urandom(8).hex()}"  # NOTE: secrets.token_hex(8), with fewer layers


def _ms(clock: Callable[[], float]) -> int:
    return int(clock() * 1000)


class Journal:
    """Journal operations; each is one Redis round trip."""

    def __init__(self, client: redis.Redis, *, holder: str, queue_limit: int = 1000,
                 queue_max_bytes: int = 100 << 20, max_bytes: int = 1 << 30,
                 max_attempts: int = 5, retention: float = 86400,
                 body_retention: float = 3600, lease: float = 30,
                 history_limit: int = 10000, clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._holder = holder
        self._queue_limit = queue_limit
        self._queue_max_bytes = queue_max_bytes
        self._max_bytes = max_bytes
        self._body_retention = body_retention
        self._max_attempts = max_attempts
        self._retention = int(retention)
        self._lease = lease
        self._history_limit = history_limit
        self._clock = clock
        self._admit = client.register_script(scripts.ADMIT)
        self._lean = _LeanCalls(client)
        self._retry = client.register_script(scripts.RETRY)
        self._complete = client.register_script(scripts.COMPLETE)
        self._lease_script = client.register_script(scripts.LEASE)
        self._sweep = client.register_script(scripts.SWEEP)
        self._reap = client.register_script(scripts.REAP)
        self._drop_bodies = client.register_script(scripts.DROP_BODIES)
        self._renew = client.register_script(scripts.RENEW)
        self._trim = client.register_script(scripts.TRIM)
        self._change = client.register_script(scripts.CHANGE)
        self._prune = client.register_script(scripts.PRUNE)
        self._idle = client.register_script(scripts.IDLE)

    @translate_redis_errors
    def admit(self, ref: str, *, by_id: bool, token_hash: str, request_id: str,
              request: IncomingRequest) -> Admission:
        """Decide a proxied request's fate and journal it, in one round trip.

        Returns an :class:`Admission` whose ``outcome`` is ``forward`` (journaled
        in_flight; the agent runs at ``route``), ``queued`` (journaled; ``position`` in its
        agent's queue, ``wait`` says why: the agent is down, has a backlog that an ordered
        agent's new request waits behind, or is at ``max_concurrency``), ``busy`` (at
        ``max_concurrency`` with ``on_busy`` reject: nothing stored), ``direct``
        (persistence off: not journaled), ``idempotent`` (an earlier request with the same
        key is queued, in flight or completed; a failed or cancelled one's key admits this
        request instead), ``over`` (the journal's byte budget is used up), ``full`` (the
        agent's queue is: ``queue_limit`` requests or ``queue_max_bytes``), ``forbidden``
        or ``missing``; nothing is stored for those.
        A forwarded request holds ``lease`` (:data:`FIRST_LEASE`) for this process.

        Admitting the same ``request_id`` again (a resend after a lost reply) returns the
        first admission's outcome and stores nothing more.
        """
        rid = request_id
        now = _ms(self._clock)
        headers = json.dumps(request.headers)
        bodies = allocated(len(request.body))
        size = (bodies + allocated(len(headers)) + len(request.path) + len(request.query)
                + len(request.authorization) + RECORD_OVERHEAD)
        fields: list[str | int | float | bytes] = [
            "method", request.method, "path", request.path, "query", request.query,
            "headers", headers, "authorization", request.authorization, "body", request.body,
            "fingerprint", request.fingerprint, "idempotency_key", request.idempotency_key,
            "created_at", now, "updated_at", now, "error", ""]
        reply = self._lean(self._admit, [
            ref, "1" if by_id else "0", token_hash, rid, now, self._queue_limit,
            request.idempotency_key, request.fingerprint, now + int(self._lease * 1000),
            self._retention, self._holder, size, self._max_bytes, self._queue_max_bytes,
            *fields, "bodies_size", bodies])
        return _admission(rid, [part.decode() for part in reply])

    def complete(self, request_id: str, *, status: int, headers: list[tuple[str, str]],
                 body: bytes, truncated: bool, error: str = "", replayed: bool = False,
                 latency: float | None = None, lease: int) -> Completion:
        """Record the agent's response (one :class:`Answer`: see :meth:`write`)."""
        return self.write([Answer(request_id, lease, status, headers, body, truncated,
                                  error, replayed, latency)])[0]

    @translate_redis_errors
    def write(self, items: Sequence[Answer | Published]) -> list[Completion]:
        """Record answers and append live-capture entries, in their order, in one
        pipelined round trip; return the answers' completions.

        The current lease's holder completes a request even when that lease expired
        and was swept (the request is ``queued`` again, and leaves its queue, or
        ``failed``), as long as nobody has leased it since.

        Returns:
            For each answer: ``COMPLETED``; ``STALE`` (nothing recorded) when another
            lease was taken since, or the request is already ``completed`` or
            ``cancelled``; ``MISSING`` when the record is gone.

        NOTE: a response's entries come before its answer, so its stream is whole when
        its record completes. An entry Redis refuses is dropped (the live capture is best
        effort: followers fall back on the record).
        """
        now = _ms(self._clock)
        answers: list[tuple[int, Answer]] = []
        with self._redis.pipeline(transaction=False) as pipe:
            for item in items:
                if isinstance(item, Answer):
                    answers.append((len(pipe), item))
                    pipe.evalsha(self._complete.sha, 0, *self._complete_args(item, now))
                else:
                    item.queue(pipe)
            replies = pipe.execute(raise_on_error=False)
        # NOTE: a script Redis lost (a restart): those answers again, after a reload; the
        # entries are not sent twice
        lost = [(self._complete, self._complete_args(answer, now)) for index, answer in answers
                if isinstance(replies[index], NoScriptError)]
        again = iter(self._pipelined(lost) if lost else [])
        completions = []
        for index, _ in answers:
            reply = replies[index]
            if isinstance(reply, NoScriptError):
                reply = next(again)
            elif isinstance(reply, Exception):
                raise reply
            completions.append(Completion(reply.decode()))
        return completions

    @translate_redis_errors
    def complete_and_lease(self, answer: Answer, agent_id: str
                           ) -> tuple[Completion, dict[str, Any] | None]:
        """Record a replayed answer, then lease the agent's next queued request, in one
        pipelined round trip (:meth:`write`, then :meth:`lease_next`); return the
        completion and the leased record (or None).

        Raises:
            AtCapacity: nothing leased (the answer was recorded: its ``completion``).
        """
        now = _ms(self._clock)
        completed, leased = self._pipelined([
            (self._complete, self._complete_args(answer, now)),
            (self._lease_script, self._lease_args(agent_id, now))])
        completion = Completion(completed.decode())
        if leased == b"busy":
            raise AtCapacity(agent_id, completion)
        return completion, _leased(leased)

    @staticmethod
    def _complete_args(answer: Answer, now: int) -> list[EncodableT]:
        latency = answer.latency
        bucket = "" if latency is None else "latency_le_" + next(
            (str(bound) for bound in LATENCY_BUCKETS if latency <= bound), "inf")
        stored = json.dumps(answer.headers)
        return [answer.request_id, now, "replayed" if answer.replayed else "",
                bucket, latency or 0, answer.lease, allocated(len(answer.body)),
                allocated(len(stored)), "resp_status", answer.status,
                "resp_headers", stored, "resp_body", answer.body,
                "resp_truncated", "1" if answer.truncated else "0", "note", answer.error]

    def _pipelined(self, calls: list[tuple[Script, list[EncodableT]]]) -> list[Any]:
        """Run each script with its arguments, in one round trip; return the replies.

        PERF: EVALSHA alone, so a batch is one round trip (a pipeline given the Script
        would ask SCRIPT EXISTS first); the script is loaded again only when Redis lost it
        (a restart), and the calls are sent once more then: every journal script may run
        twice (scripts.py).
        """
        for _ in range(2):
            with self._redis.pipeline(transaction=False) as pipe:
                for script, args in calls:
                    pipe.evalsha(script.sha, 0, *args)
                replies = pipe.execute(raise_on_error=False)
            lost = {script for (script, _), reply in zip(calls, replies)
                    if isinstance(reply, NoScriptError)}
            if not lost:
                break
            for script in lost:
                script.sha = self._redis.script_load(script.script)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    @translate_redis_errors
    def retry(self, request_id: str, error: str, *, attempted: bool = True,
              from_queue: bool = False, lease: int) -> tuple[Retry, int]:
        """Return a leased request to its queue (or fail it after ``max_attempts``).

        Args:
            attempted: False when nothing reached the agent (connection refused): the
                attempt does not count.
            from_queue: the request was leased from its queue (replay), so it goes back to
                the front even when it was not attempted. A new arrival that was not
                attempted joins the back, behind the requests queued before it.
            lease: the lease the caller holds (see :meth:`complete`).

        Returns:
            A :class:`Retry` (``QUEUED``, ``FAILED``, ``STALE`` when the caller's lease
            is not the current one or the request is not in flight, ``FULL`` when a
            new arrival found no room in its queue and was taken back as if never admitted,
            or ``missing``) and, when queued, the queue position.
        """
        mode = "attempted" if attempted else "untried" if from_queue else "new"
        reply = self._retry(args=[request_id, _ms(self._clock), error[:500],
                                  self._max_attempts, mode, lease, self._queue_limit,
                                  self._queue_max_bytes])
        parts = [part.decode() for part in reply]
        return Retry(parts[0]), int(parts[2]) if len(parts) > 2 else 0

    def live(self, request_id: str, *, lease: int, status: int,
             headers: list[tuple[str, str]], eager: bool = False,
             sink: Callable[[Published], None] | None = None) -> LiveCapture:
        """Return the live capture of one attempt's response (see :mod:`.live`), which
        lives as long as a lease from its last write; ``sink`` takes its writes (else it
        writes them itself)."""
        return LiveCapture(self._redis, request_id, lease=lease, status=status,
                           headers=headers, ttl=self._lease, eager=eager, sink=sink)

    @translate_redis_errors
    def progress(self, request_id: str) -> tuple[RequestStatus, int] | None:
        """Return a request's status and current lease number, or None when it is gone
        (what a follower polls: one HMGET)."""
        status, lease = cast(list[bytes | None],
                             self._redis.hmget(request_key(request_id), "status", "lease"))
        if status is None:
            return None
        return RequestStatus(status.decode()), int(lease or 0)

    def settle(self, request_id: str, *, within: float = SETTLE) -> RequestStatus | None:
        """Return the request's status once it no longer reads ``in_flight``, or after
        ``within`` seconds (then ``in_flight``); None when it is gone.

        NOTE: a request whose client has its answer reads ``in_flight`` until its
        completion lands (completions.py: about one round trip); who reads it right after
        the answer (an Idempotency-Key retry, the record's page) waits for that, polling.
        """
        deadline, pause = time.monotonic() + within, 0.002
        while True:
            progress = self.progress(request_id)
            if progress is None or progress[0] is not RequestStatus.IN_FLIGHT:
                return None if progress is None else progress[0]
            if time.monotonic() >= deadline:
                return progress[0]
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    @translate_redis_errors
    def mark_idle(self, agent_id: str, idle_timeout: float) -> bool:
        """Mark the agent idle (``pending``) if it has been for ``idle_timeout`` seconds:
        running as its user wants, nothing in flight, queued or draining, and no request
        admitted nor answered meanwhile. True if marked: the caller stops or pauses it.

        NOTE: from the mark on, its requests queue and wake it (see scripts.IDLE).
        """
        return bool(self._idle(args=[agent_id, _ms(self._clock), int(idle_timeout * 1000)]))

    @translate_redis_errors
    def renew(self, request_id: str, *, lease: int) -> bool:
        """Push a held lease's deadline forward (long responses); False if it is not held
        (another lease was taken, or the request is not in flight)."""
        deadline = _ms(self._clock) + int(self._lease * 1000)
        return bool(self._renew(keys=[request_key(request_id), LEASES],
                                args=[request_id, lease, deadline]))

    @translate_redis_errors
    def lease_next(self, agent_id: str) -> dict[str, Any] | None:
        """Lease the agent's oldest queued request to this process; return its record (with
        the ``lease`` the caller now holds), or None.

        Raises:
            AtCapacity: the agent has ``max_concurrency`` requests in flight.

        NOTE: a ticket makes a resend of this call (its reply lost) return the same request
        rather than lease a second one.
        """
        reply = self._lease_script(args=self._lease_args(agent_id, _ms(self._clock)))
        if reply == b"busy":
            raise AtCapacity(agent_id)
        return _leased(reply)

    def _lease_args(self, agent_id: str, now: int) -> list[EncodableT]:
        return [agent_id, now, now + int(self._lease * 1000), self._holder,
                secrets.token_hex(8)]

    @translate_redis_errors
    def sweep(self) -> set[str]:
        """Requeue expired leases; return the agents whose queues got requests back."""
        reply = self._sweep(args=[_ms(self._clock), self._max_attempts])
        return {agent.decode() for agent in reply}

    @translate_redis_errors
    def reap(self, holder: str) -> set[str]:
        """Give a dead process's leases back (to the front of their queues, or ``failed``
        after ``max_attempts``); return the agents whose queues got requests back."""
        reply = self._reap(args=[holder, _ms(self._clock), self._max_attempts])
        return {agent.decode() for agent in reply}

    @translate_redis_errors
    def get(self, agent_id: str, request_id: str, *, with_body: bool = True) -> dict[str, Any]:
        # NOTE: bytes to bytes, as agents.store.text says; the bodies stay bytes
        raw = cast(dict[bytes, bytes], self._redis.hgetall(request_key(request_id)))
        if not raw or raw.get(b"agent", b"").decode() != agent_id:
            raise NotFound(f"request {request_id!r} not found for agent {agent_id}",
                           code="request_not_found")
        return _decode(raw, with_body=with_body)

    @translate_redis_errors
    def page(self, agent_id: str, *, status: RequestStatus | None = None, offset: int = 0,
             limit: int = 50) -> tuple[list[dict[str, Any]], int]:
        """Return a page of the agent's requests (newest first) and the total listed."""
        index = requests_key(agent_id)
        # NOTE: Redis takes signed 64-bit indexes; the API allows offsets up to 2^63 - 1
        last = min(offset + limit, 2 ** 63 - 1) - 1
        if status is RequestStatus.QUEUED:
            queue = queue_key(agent_id)
            ids, total = members(self._redis.lrange(queue, offset, last)), self._redis.llen(queue)
            return self._summaries(ids), total
        if status is None:
            ids = members(self._redis.zrevrange(index, offset, last))
            return self._summaries(ids), self._redis.zcard(index)
        # NOTE: other statuses are filtered from the bounded index (history_limit).
        matching = [s for s in self._summaries(members(self._redis.zrevrange(index, 0, -1)))
                    if s["status"] == status.value]
        return matching[offset:offset + limit], len(matching)

    def _summaries(self, ids: Iterable[bytes]) -> list[dict[str, Any]]:
        with self._redis.pipeline(transaction=False) as pipe:
            for rid in ids:
                pipe.hmget(request_key(rid.decode()), *SUMMARY_FIELDS)
            rows = pipe.execute()
        return [_decode(dict(zip((f.encode() for f in SUMMARY_FIELDS), row)), with_body=False)
                for row in rows if row[0] is not None]

    @translate_redis_errors
    def queue_length(self, agent_id: str) -> int:
        return self._redis.llen(queue_key(agent_id))

    @translate_redis_errors
    def agents_with_queues(self) -> list[str]:
        """Return agents that have queued requests (for the periodic drain kick).

        PERF: a set kept by the scripts that queue requests, not a keyspace scan; agents
        whose queues have emptied are dropped from it here.
        """
        return [agent.decode() for agent in self._prune(args=[])]

    @translate_redis_errors
    def cancel(self, agent_id: str, request_id: str) -> None:
        """Cancel a queued request.

        Raises:
            NotFound: no such request for this agent.
            Conflict: the request is not queued any more.
        """
        self._apply_change(agent_id, request_id, "cancel")

    @translate_redis_errors
    def requeue(self, agent_id: str, request_id: str) -> None:
        """Put a queued, failed or cancelled request at the front of its queue.

        Raises:
            NotFound, Conflict: as :meth:`cancel`.
            QueueFull: the agent's queue has no room for a failed or cancelled request.
        """
        self._apply_change(agent_id, request_id, "requeue")

    def _apply_change(self, agent_id: str, request_id: str, action: str) -> None:
        result = self._change(args=[request_id, agent_id, action, _ms(self._clock),
                                    self._queue_limit, self._queue_max_bytes]).decode()
        if result == "missing":
            raise NotFound(f"request {request_id!r} not found for agent {agent_id}",
                           code="request_not_found")
        if result == Retry.FULL.value:
            raise QueueFull(agent_id)
        if result != "ok":
            raise Conflict(f"request {request_id} is {result}; cannot {action} it",
                           code="request_state")

    @translate_redis_errors
    def trim(self, agent_id: str) -> int:
        """Delete the agent's finished requests older than the retention or beyond the
        newest ``history_limit``; return how many were dropped.

        Queued and in-flight requests are never dropped.
        """
        cutoff = _ms(self._clock) - self._retention * 1000
        return int(self._trim(args=[agent_id, cutoff, self._history_limit]))

    @translate_redis_errors
    def drop_bodies(self, *, batch: int = 1000, batches: int = 10) -> int:
        """Drop the bodies of requests completed more than ``body_retention`` ago (their
        records stay), at most ``batches`` scripts of ``batch``; return how many."""
        cutoff = _ms(self._clock) - int(self._body_retention * 1000)
        dropped = 0
        for _ in range(batches):
            done = int(self._drop_bodies(args=[cutoff, batch]))
            dropped += done
            if done < batch:
                break
        return dropped

    @translate_redis_errors
    def stored_bytes(self) -> int:
        """Return the bytes the journal holds, as counted against ``max_bytes``."""
        return int(self._redis.get(JOURNAL_BYTES) or 0)

    @translate_redis_errors
    def purge(self, agent_id: str) -> None:
        """Delete every record, queue entry, lease and key of a removed agent."""
        index = requests_key(agent_id)
        ids = [text(rid) for rid in members(self._redis.zrange(index, 0, -1))]
        ids += [text(rid) for rid in self._redis.lrange(queue_key(agent_id), 0, -1)]
        idem = list(self._redis.scan_iter(match=idempotency_pattern(agent_id), count=500))
        ids = sorted(set(ids))
        with self._redis.pipeline(transaction=False) as pipe:
            for rid in ids:
                pipe.hget(request_key(rid), "size")
            sizes = pipe.execute()
        with self._redis.pipeline() as pipe:
            for rid in ids:
                pipe.delete(request_key(rid))
                pipe.zrem(LEASES, rid)
                pipe.zrem(BODIES, rid)
                pipe.delete(response_stream_key(rid))
            pipe.decrby(JOURNAL_BYTES, sum(int(size or 0) for size in sizes))
            pipe.hdel(QUEUE_BYTES, agent_id)
            pipe.delete(index, queue_key(agent_id), ticket_key(agent_id), flying_key(agent_id),
                        *idem)
            pipe.srem(QUEUED, agent_id)
            pipe.execute()


class _LeanCalls:
    """Journal scripts on the hot path (ADMIT), with the least work on the calling thread.

    PERF: a call takes a Redis connection of this class's own (the last one given back),
    sends the command packed by hiredis and reads its reply, skipping the pool's checkout
    (a poll per call) and redis-py's per-command layers: 82 -> 32 µs of CPU a call,
    measured. There are as many connections as calls ever ran at once. A connection that
    fails, or a script that Redis lost (a restart), hands the call to the full path,
    which reconnects, retries and reloads: safe, as every journal script may run twice
    (scripts.py).
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._idle: list[redis.Connection] = []
        self._lock = threading.Lock()

    def __call__(self, script: Script, args: list[str | int | float | bytes]) -> Any:
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            pool = self._client.connection_pool
            connection = pool.connection_class(**pool.connection_kwargs)
        try:
            # NOTE: hiredis's stub types the command as a 1-tuple
            command = pack_command(("EVALSHA", script.sha, 0, *args))  # type: ignore[arg-type]
            connection.send_packed_command([command], check_health=False)
            return connection.read_response()
        except (redis.ConnectionError, redis.TimeoutError, NoScriptError) as ex:
            if not isinstance(ex, NoScriptError):
                connection.disconnect()  # NOTE: it reconnects when next used
        finally:
            with self._lock:
                self._idle.append(connection)
        return script(args=args)


def _leased(reply: list[bytes] | None) -> dict[str, Any] | None:
    """Decode the LEASE script's reply: the leased record (with its ``lease``), or None."""
    if not reply:
        return None
    raw = dict(zip(reply[::2], reply[1::2]))
    return {**_decode(raw, with_body=True), "lease": int(raw[b"lease"])}


def _admission(request_id: str, reply: list[str]) -> Admission:
    """Decode the ADMIT script's reply (its layout is documented above the script)."""
    outcome, rest = Outcome(reply[0]), reply[1:]
    if outcome is Outcome.DIRECT:
        return Admission(outcome, rest[0], route=rest[2], agent_status=AgentStatus(rest[1]),
                         strip_authorization=rest[3] == "1")
    if outcome is Outcome.IDEMPOTENT:
        return Admission(outcome, rest[0], request_id=rest[1],
                         request_status=RequestStatus(rest[2]), fingerprint=rest[3],
                         strip_authorization=rest[4] == "1")
    if outcome is Outcome.FORWARD:
        return Admission(outcome, rest[0], route=rest[1], request_id=request_id,
                         strip_authorization=rest[2] == "1", lease=FIRST_LEASE,
                         hold=float(rest[3]) if rest[3] else None)
    if outcome is Outcome.QUEUED:
        return Admission(outcome, rest[0], request_id=request_id, position=int(rest[1]),
                         strip_authorization=rest[2] == "1", agent_status=AgentStatus(rest[3]),
                         wait=Wait(rest[4]), hold=float(rest[5]) if rest[5] else None,
                         desired=Desired(rest[6]) if rest[6] else None, idle=rest[7] != "")
    return Admission(outcome, agent_id=rest[0] if rest else "")


def _decode(raw: dict[bytes, bytes], *, with_body: bool) -> dict[str, Any]:
    """Turn a stored record into the API's view (bodies as text, or base64 if binary)."""
    fields = {key.decode(): value for key, value in raw.items() if value is not None}
    record: dict[str, Any] = {}
    for key, value in fields.items():
        if key in ("body", "resp_body"):
            continue
        record[key] = value.decode() if isinstance(value, bytes) else value
    for key in ("attempts", "created_at", "updated_at"):
        if key in record:
            record[key] = int(record[key])
    record["resp_status"] = int(record["resp_status"]) if record.get("resp_status") else None
    for key in ("headers", "resp_headers"):
        if key in record:
            record[key] = json.loads(record[key])
    authorization = record.pop("authorization", "")
    if authorization:
        record["headers"].insert(0, ["Authorization", authorization])
    if "resp_truncated" in record:
        record["resp_truncated"] = record["resp_truncated"] == "1"
    record.pop("fingerprint", None)
    record.pop("lease", None)
    if with_body:
        record["body"] = fields.get("body", b"")
        record["resp_body"] = fields.get("resp_body", b"") if record.get("resp_status") else None
    return record
