"""Replay of queued requests with RQ: one deduplicated drain job per agent.

A drain job waits until the agent's app accepts connections, then delivers its queued
requests oldest first, one lease at a time, straight to the container. Any HTTP response
completes a request; connection failures and timeouts put it back at the front of the
queue with capped, jittered exponential backoff, and ``max_attempts`` makes it ``failed``.

A job works for one time slice (:data:`DRAIN_SLICE`), then hands what is left to a fresh
job under the same claim: a warm shutdown waits for at most one slice plus one delivery,
and a busy agent does not keep a worker from the others.

Keys (under :data:`agentainer.keys.PREFIX`, named in :mod:`agentainer.keys`):
    drain:{aid}      HASH  the claim of the agent's pending or running drain: ``token``, a
                           random value that only the jobs it was made for (the first, and
                           those it hands off to) renew or release, and ``holder``, the
                           worker running it ('' while the job waits in RQ's queue)
    claims:{holder}  SET   agents whose drain claims a worker holds (taken back when it dies)

Jobs are RQ jobs named :data:`DRAIN_JOB`, serialized as JSON (never pickle); only
``agentainer-worker`` runs them, on the :class:`Drainer` its composition root built
(:func:`job_class`, which also runs the webhooks' delivery jobs): a job names no function
for a worker to import.
"""

import logging
import random
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import redis
import rq
from rq.serializers import JSONSerializer

from agentainer.agents.store import AgentStore, translate_redis_errors
from agentainer.backoff import backoff
from agentainer.errors import AgentNotFound, InvalidInput
from agentainer.journal.journal import Answer, AtCapacity, Completion, Journal
from agentainer.journal.upstream import (
    RENEW_EVERY, AgentDown, AgentFailed, AgentResponse, BrokenResponse, Capture, Renewal,
    Upstream, read_captured, relayable, replay_headers,
)
from agentainer.keys import claim_key, claims_key, lua_names
from agentainer.statuses import AgentStatus

logger = logging.getLogger(__name__)

QUEUE = "agentainer-replay"
DRAIN_JOB = "agentainer.journal.replay.drain"
DRAIN_SLICE = 10.0  # seconds a drain job delivers before a fresh job takes over
PENDING_TTL = 30.0  # NOTE: a claim whose job has not started yet: a later schedule retries
APP_POLL_BASE, APP_POLL_CAP = 0.05, 1.0  # a starting app: polled from 50 ms, doubling to 1 s
# an agent at max_concurrency: polled for room from 20 ms, doubling to 500 ms
ROOM_POLL_BASE, ROOM_POLL_CAP = 0.02, 0.5
# NOTE: leases and held drain claims live connect + read timeout + LEASE_GRACE from their
# last renewal, and a holder renews at most RENEW_EVERY (proxy) apart before it may block
# for up to connect + read timeout: RENEW_EVERY < LEASE_GRACE keeps both alive meanwhile.
# A holder that dies loses them sooner: liveness.py.
LEASE_GRACE = 5.0

# Claim a free agent for a new job: KEYS claim; ARGV token, ttl_ms. (A resend of a claim
# that was made says so again.)
_CLAIM = """
local token = redis.call('hget', KEYS[1], 'token')
if token then return token == ARGV[1] and 1 or 0 end
redis.call('hset', KEYS[1], 'token', ARGV[1], 'holder', '')
redis.call('pexpire', KEYS[1], ARGV[2])
return 1
"""

# Take the claim when it is free or already ours, for a holder, and push its expiry:
# KEYS claim, the holder's claims; ARGV token, holder, ttl_ms, aid.
_HOLD = """
local token = redis.call('hget', KEYS[1], 'token')
if token and token ~= ARGV[1] then return 0 end
redis.call('hset', KEYS[1], 'token', ARGV[1], 'holder', ARGV[2])
redis.call('pexpire', KEYS[1], ARGV[3])
redis.call('sadd', KEYS[2], ARGV[4])
return 1
"""

# Delete the claim only while it is ours: KEYS claim, the holder's claims; ARGV token, aid.
_RELEASE = """
redis.call('srem', KEYS[2], ARGV[2])
if redis.call('hget', KEYS[1], 'token') ~= ARGV[1] then return 0 end
return redis.call('del', KEYS[1])
"""

# Free the claims of a dead holder: KEYS its claims; ARGV holder (each claim's key is built
# from an agent ID the script reads: K.claim, from keys.lua_names). Returns their agents.
_REAP = lua_names() + """
local freed = {}
for _, aid in ipairs(redis.call('smembers', KEYS[1])) do
  local claim = K.claim..aid
  if redis.call('hget', claim, 'holder') == ARGV[1] then
    redis.call('del', claim)
    freed[#freed + 1] = aid
  end
end
redis.call('del', KEYS[1])
return freed
"""


@dataclass(frozen=True)
class DrainState:
    """What a drain hands to the next job (times are epoch seconds)."""

    failures: int = 0        # deliveries failed in a row, for the backoff
    retry_at: float = 0.0    # no delivery before this
    wait_until: float = 0.0  # waiting for the app gives up then (0: not waiting yet)


class ReplayScheduler:
    """Enqueues drain jobs; at most one is pending or running per agent.

    The claim's value is a token given to the job it was made for: a job drains only while
    the claim holds its token, so a job that sat in the RQ queue past its claim's expiry
    (:data:`PENDING_TTL`) gives way to a later one. A running job holds the claim for its
    worker (the ``holder``) and renews it; when that worker dies, :meth:`reap` frees it at
    once, and otherwise it expires with the drain's lease (``claim_ttl``). A job that used
    its time slice hands the same token and its :class:`DrainState` to the next job
    without letting go of the claim (:meth:`hand_off`), so no :meth:`schedule` (the
    janitor's, every second) can start a fresh drain that forgets the backoff.
    """

    def __init__(self, client: redis.Redis, *, claim_ttl: float) -> None:
        self._redis = client
        self._queue = rq.Queue(QUEUE, connection=client, serializer=JSONSerializer)
        self._ttl_ms = max(1000, int(claim_ttl * 1000))
        self._claim = client.register_script(_CLAIM)
        self._hold = client.register_script(_HOLD)
        self._release = client.register_script(_RELEASE)
        self._reap = client.register_script(_REAP)

    def schedule(self, agent_id: str, state: DrainState = DrainState()) -> None:
        """Ask for the agent's queue to be drained (a no-op if a drain is pending).

        Never raises: if Redis is unreachable now, the janitor schedules it later.
        """
        claim = secrets.token_hex(8)
        try:
            if self._claim(keys=[claim_key(agent_id)], args=[claim, int(PENDING_TTL * 1000)]):
                self._enqueue(agent_id, claim, state)
        except redis.RedisError as ex:
            logger.warning("agent %s: cannot schedule its replay now (%s)", agent_id, ex)

    def hand_off(self, agent_id: str, claim: str, holder: str, state: DrainState) -> bool:
        """Enqueue a job that carries on under ``claim`` (which ``holder`` keeps) with
        ``state``.

        Returns False, enqueuing nothing, when another drain holds the claim. The claim is
        renewed first, so it outlives a crash here by its TTL at most (or until the
        holder's death is noticed); the next job takes it over when it starts.

        Raises:
            redis.RedisError: the job could not be enqueued (the claim is then dropped,
                or expires, and the janitor schedules a fresh drain).
        """
        if not self.hold(agent_id, claim, holder):
            return False
        try:
            self._enqueue(agent_id, claim, state)
        except redis.RedisError:
            try:
                self.release(agent_id, claim, holder)
            except redis.RedisError:
                pass  # NOTE: the claim expires by its TTL
            raise
        return True

    def _enqueue(self, agent_id: str, claim: str, state: DrainState) -> None:
        self._queue.enqueue_call(DRAIN_JOB, args=(agent_id, claim), kwargs=asdict(state),
                                 timeout=-1, result_ttl=0, failure_ttl=3600)

    def hold(self, agent_id: str, claim: str, holder: str) -> bool:
        """Take or renew the agent's drain claim for ``claim`` and the worker ``holder``;
        False if another drain holds it."""
        return bool(self._hold(keys=[claim_key(agent_id), claims_key(holder)],
                               args=[claim, holder, self._ttl_ms, agent_id]))

    def release(self, agent_id: str, claim: str, holder: str) -> None:
        """Drop the agent's drain claim if ``claim`` still holds it."""
        self._release(keys=[claim_key(agent_id), claims_key(holder)], args=[claim, agent_id])

    @translate_redis_errors
    def reap(self, holder: str) -> set[str]:
        """Free a dead worker's drain claims and drop its abandoned RQ jobs; return the
        agents whose drains were freed (to schedule again)."""
        reply = self._reap(keys=[claims_key(holder)], args=[holder])
        freed = {aid.decode() for aid in reply}
        registry = rq.registry.StartedJobRegistry(QUEUE, connection=self._redis)
        for job_id in registry.get_job_ids(cleanup=False):
            try:
                job = rq.job.Job.fetch(job_id, connection=self._redis,
                                       serializer=JSONSerializer)
            except rq.exceptions.NoSuchJobError:
                continue
            if job.worker_name == holder:
                registry.remove_executions(job)
                job.delete()
        worker = rq.Worker.find_by_key(rq.Worker.redis_worker_namespace_prefix + holder,
                                       connection=self._redis)
        if worker is not None:
            worker.register_death()
        return freed


class _Stop(Exception):
    """The drain ends early: its agent is not running, or another drain holds the claim."""


@dataclass
class _Job:
    """One drain job's progress."""

    agent_id: str
    claim: str
    slice_end: float
    state: DrainState
    delivered: int = 0
    holding: bool = False
    emptied: bool = False    # it ended on an empty queue
    full_polls: int = 0      # leases refused in a row: the agent at max_concurrency
    renewal: Renewal = field(default_factory=Renewal)
    answer: Answer | None = None  # the last delivery's, recorded with the next lease


@dataclass
class Drainer:
    """Delivers one agent's queued requests (the body of the ``drain`` job)."""

    store: AgentStore
    journal: Journal
    scheduler: ReplayScheduler
    upstream: Upstream
    holder: str  # NOTE: this worker's liveness holder, which its claims and leases name
    drain_wait: float
    retry_base: float
    retry_cap: float
    capture_limit: int
    time_slice: float = DRAIN_SLICE
    rand: Callable[[], float] = random.random
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time  # NOTE: wall clock: hand-offs cross processes

    def run(self, agent_id: str, claim: str, **state: Any) -> int:
        """The RQ job :data:`DRAIN_JOB`: :meth:`drain` with ``state`` as plain values."""
        return self.drain(agent_id, claim, DrainState(**state))

    def drain(self, agent_id: str, claim: str, state: DrainState = DrainState()) -> int:
        """Deliver for one time slice; return how many requests completed.

        When the slice is used up and requests remain, a fresh job carries on with what is
        left of ``state`` under the same ``claim``, which is never let go in between (see
        :meth:`ReplayScheduler.hand_off`); one job lasts one slice plus one delivery.
        """
        job = _Job(agent_id, claim, self.clock() + self.time_slice, state)
        handoff = None
        try:
            self._check(job)
            handoff = self._run(job)
        except _Stop as ex:
            logger.info("agent %s: replay stops: %s", agent_id, ex)
        except BaseException:
            self.scheduler.release(agent_id, claim, self.holder)
            raise
        if job.delivered:
            logger.info("agent %s: replayed %d request(s)", agent_id, job.delivered)
        if handoff is None:
            self.scheduler.release(agent_id, claim, self.holder)
            if job.emptied and self.journal.queue_length(agent_id):
                # NOTE: a request queued behind this drain's claim (an ordered agent's
                # backlog) after its last lease found the queue empty: drain it now
                self.scheduler.schedule(agent_id)
        elif self.scheduler.hand_off(agent_id, claim, self.holder, handoff):
            logger.info("agent %s: time slice used; a fresh job carries on", agent_id)
        else:
            logger.info("agent %s: time slice used; another drain holds the claim", agent_id)
        return job.delivered

    def _run(self, job: _Job) -> DrainState | None:
        """Deliver until the queue is empty (None) or the slice is used (what is left).

        PERF: a delivery's answer is recorded in the round trip that leases the next
        request (:meth:`Journal.complete_and_lease`), or at the end.
        """
        try:
            return self._deliver_all(job)
        finally:
            if job.answer is not None:
                answer, job.answer = job.answer, None
                self._recorded(job, answer, self.journal.write([answer])[0])

    def _deliver_all(self, job: _Job) -> DrainState | None:
        route = None
        while True:
            state = job.state
            if route is None:
                self._sleep_until(job, min(state.retry_at, job.slice_end))
                if self.clock() < state.retry_at:
                    return state
                wait_until = state.wait_until or self.clock() + self.drain_wait
                route = self._wait_for_app(job, min(wait_until, job.slice_end))
                if route is None and self.clock() < wait_until:
                    return replace(state, wait_until=wait_until)
                if route is None:
                    logger.info("agent %s: app not accepting connections; replay waits",
                                job.agent_id)
                    return None
            elif self.clock() >= job.slice_end:
                return state if self.journal.queue_length(job.agent_id) else None
            self._check(job)
            try:
                record = self._lease(job)
            except AtCapacity:
                job.full_polls += 1
                self._sleep_until(job, min(job.slice_end, self.clock() + backoff(
                    job.full_polls, base=ROOM_POLL_BASE, cap=ROOM_POLL_CAP, rand=self.rand)))
                continue
            job.full_polls = 0
            if record is None:
                job.emptied = True
                return None
            if not self._deliver(job, route, record):
                route = None

    def _lease(self, job: _Job) -> dict[str, Any] | None:
        """Record the last delivery's answer (if any) and lease the next request.

        Raises:
            AtCapacity: the agent has max_concurrency requests in flight.
        """
        answer = job.answer
        if answer is None:
            return self.journal.lease_next(job.agent_id)
        try:
            completion, record = self.journal.complete_and_lease(answer, job.agent_id)
        except AtCapacity as ex:
            job.answer = None
            self._recorded(job, answer, ex.completion)
            raise
        job.answer = None
        self._recorded(job, answer, completion)
        return record

    def _recorded(self, job: _Job, answer: Answer, completion: Completion | None) -> None:
        if completion is Completion.COMPLETED:
            job.delivered += 1
        else:
            logger.warning("agent %s: %s was answered after its lease was lost; not recorded "
                           "(%s)", job.agent_id, answer.request_id, completion)

    def _deliver(self, job: _Job, route: str, record: dict[str, Any]) -> bool:
        """Deliver one leased request (its answer is left in ``job.answer``, to record);
        return False if it failed (recorded so)."""
        rid, lease = record["id"], record["lease"]
        target = record["path"] + (f"?{record['query']}" if record["query"] else "")
        headers = replay_headers(record["headers"]) + [
            ("X-Agentainer-Request-Id", rid), ("X-Agentainer-Replay", "true")]
        try:
            # NOTE: a journaled request is redelivered anyway, so a reused keep-alive
            # connection the agent had closed may be retried on a new one
            response = self.upstream.send(route, record["method"], target, headers,
                                          record["body"], resend=True)
            # NOTE: an answer the proxy could not pass on is a failed attempt here too (its
            # headers would break an Idempotency-Key replay of the stored response)
            passed = relayable(response)
            body, truncated = self._read(job, record, response, passed)
        except (AgentDown, AgentFailed) as ex:
            status, _ = self.journal.retry(rid, str(ex), attempted=not isinstance(ex, AgentDown),
                                           from_queue=True, lease=lease)
            failures = job.state.failures + 1
            delay = backoff(failures, base=self.retry_base, cap=self.retry_cap,
                            rand=self.rand)
            job.state = DrainState(failures, retry_at=self.clock() + delay)
            logger.info("agent %s: replay of %s failed (%s); it is %s", job.agent_id, rid, ex,
                        status)
            return False
        job.answer = Answer(rid, lease, response.status, passed, body, truncated,
                            replayed=True)
        job.state = DrainState()
        return True

    def _read(self, job: _Job, record: dict[str, Any], response: AgentResponse,
              passed: list[tuple[str, str]]) -> tuple[bytes, bool]:
        """Read the response as it arrives, keeping up to ``capture_limit`` bytes; return
        them and whether more came. The lease and the claim are renewed meanwhile.

        The response is published to its live capture as it comes, always (even a small
        one, whole in one read): a caller may be following it (journal/follow.py).

        Raises:
            BrokenResponse: the response broke off or went silent for the read timeout.
        """
        capture = Capture(self.capture_limit)
        live = self.journal.live(record["id"], lease=record["lease"], status=response.status,
                                 headers=passed, eager=True)
        try:
            for _ in read_captured(response, capture, lambda: self._keep(job, record), live):
                pass
        except BrokenResponse:
            response.close()
            live.end("failed", capture.size)
            raise
        finally:
            response.release_conn()
        live.end("completed", capture.size)
        return bytes(capture.data), capture.truncated

    def _keep(self, job: _Job, record: dict[str, Any] | None = None) -> None:
        """Renew the claim (and the record's lease) when a renewal is due."""
        if not job.renewal.due(self.clock()):
            return
        if record is not None:
            self.journal.renew(record["id"], lease=record["lease"])
        job.holding = self.scheduler.hold(job.agent_id, job.claim, self.holder)

    def _check(self, job: _Job) -> None:
        """Renew the claim when due; stop if another drain holds it."""
        self._keep(job)
        if not job.holding:
            raise _Stop("another drain holds the claim")

    def _sleep_until(self, job: _Job, until: float) -> None:
        """Sleep until ``until``, renewing the claim; stop if another drain holds it."""
        while (left := until - self.clock()) > 0:
            self._check(job)
            self.sleep(min(left, RENEW_EVERY))

    def _wait_for_app(self, job: _Job, until: float) -> str | None:
        """Return the agent's ``ip:port`` once its app accepts connections, or None when
        ``until`` passes first.

        Raises:
            _Stop: the agent is not running (any more).
        """
        polls = 0
        while True:
            try:
                status, route = self.store.routing(job.agent_id)
            except AgentNotFound:
                raise _Stop("the agent was removed") from None
            if status is not AgentStatus.RUNNING or not route:
                raise _Stop(f"the agent is {status.value}")
            if _accepts(route):
                return route
            left = until - self.clock()
            if left <= 0:
                return None
            self._check(job)
            polls += 1
            self.sleep(min(backoff(polls, base=APP_POLL_BASE, cap=APP_POLL_CAP, rand=self.rand),
                           left))


def _accepts(route: str) -> bool:
    host, _, port = route.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def job_class(jobs: Mapping[str, Callable[..., Any]]) -> type[rq.job.Job]:
    """Return the RQ job class a worker runs its jobs as: each job name in ``jobs`` on its
    function (:data:`DRAIN_JOB` on a :class:`Drainer`, the webhooks' delivery job).

    APPSEC: any other job (one enqueued by hand naming, say, ``os.system``) is refused,
    not imported and called.
    """
    class AgentainerJob(rq.job.Job):
        @property
        def func(self) -> Callable[..., Any]:
            name = self.func_name
            if name is None or name not in jobs:
                raise InvalidInput(f"job {self.id}: {name!r} is not an Agentainer job; "
                                   "refused")
            return jobs[name]

    return AgentainerJob
