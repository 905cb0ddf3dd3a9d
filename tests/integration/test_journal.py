"""The journal's scripts and the drain claim against a real redis-server (no Docker).

They use a database of their own on the session's redis-server, emptied for each test.
"""

import secrets
from dataclasses import asdict
from collections.abc import Iterator

import pytest
import redis
import rq
from rq.serializers import JSONSerializer

from agentainer.keys import PREFIX
from agentainer.journal.journal import (
    FIRST_LEASE, Answer, AtCapacity, Completion, IncomingRequest, Journal, Outcome, Retry,
    Wait,
    new_request_id,
)
from agentainer.journal.live import Published
from agentainer.journal.replay import QUEUE, DrainState, ReplayScheduler

DB = 15  # NOTE: the test stack uses database 0 of the same server
HOLDER = "server-test-1"


class Clock:
    """A settable wall clock; each reading moves it on 1 ms so arrivals are ordered."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{DB}")
    connection.flushdb()
    yield connection
    connection.flushdb()
    connection.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def journal(client: redis.Redis, clock: Clock) -> Journal:
    return Journal(client, holder=HOLDER, queue_limit=5, max_attempts=3, retention=3600, lease=30,
                   history_limit=3, clock=clock)


@pytest.fixture
def agent(client: redis.Redis) -> str:
    """A stopped, unordered agent with persistence on; ``set_status`` starts it.

    NOTE: unordered, so a running agent's new request is forwarded past what is queued:
    these tests take leases and queue requests by hand; test_ordered_* and
    test_traffic.py test the order itself.
    """
    agent_id = secrets.token_hex(6)
    client.hset(f"{PREFIX}agent:{agent_id}",
                mapping={"status": "stopped", "route": "", "persist": "1", "private_hash": "",
                         "ordered": "0"})
    return agent_id


def set_status(client: redis.Redis, agent_id: str, status: str) -> None:
    client.hset(f"{PREFIX}agent:{agent_id}", mapping={
        "status": status, "route": "10.0.0.2:8000" if status == "running" else ""})


def admit(journal: Journal, agent_id: str, path: str = "/", key: str = ""):
    incoming = IncomingRequest(method="POST", path=path, query="", headers=[], body=b"x",
                               fingerprint="fp-x", idempotency_key=key)
    return journal.admit(agent_id, by_id=True, token_hash="", request_id=new_request_id(),
                         request=incoming)


def queued(journal: Journal, agent_id: str, count: int) -> list[str]:
    return [admit(journal, agent_id, f"/{n}").request_id for n in range(count)]


def complete(journal: Journal, request_id: str, lease: int = FIRST_LEASE) -> str:
    return journal.complete(request_id, status=200, headers=[], body=b"ok", truncated=False,
                            lease=lease)


def queue_ids(client: redis.Redis, agent_id: str) -> list[str]:
    return [rid.decode() for rid in client.lrange(f"{PREFIX}queue:{agent_id}", 0, -1)]


# Bug 1: FIFO across a replay delivery that found the agent down.

def test_untried_replay_goes_back_to_the_front(journal: Journal, client, agent: str):
    first, second, third = queued(journal, agent, 3)
    leased = journal.lease_next(agent)
    assert leased["id"] == first and leased["attempts"] == 1
    status, position = journal.retry(first, "refused", attempted=False, from_queue=True,
                                     lease=leased["lease"])
    assert (status, position) == ("queued", 1)
    assert queue_ids(client, agent) == [first, second, third]
    again = journal.lease_next(agent)
    assert again["id"] == first and again["attempts"] == 1  # the untried one did not count


def test_attempted_replay_goes_to_the_front_and_counts(journal: Journal, client, agent: str):
    first, second = queued(journal, agent, 2)
    leased = journal.lease_next(agent)
    assert journal.retry(first, "reset", lease=leased["lease"]) == ("queued", 1)
    assert queue_ids(client, agent) == [first, second]
    assert journal.lease_next(agent)["attempts"] == 2


def test_untried_new_arrival_joins_the_back(journal: Journal, client, agent: str):
    earlier = queued(journal, agent, 2)
    set_status(client, agent, "running")
    admission = admit(journal, agent, "/fresh")
    assert admission.outcome is Outcome.FORWARD and admission.lease == FIRST_LEASE
    status, position = journal.retry(admission.request_id, "refused", attempted=False,
                                     lease=admission.lease)
    assert (status, position) == ("queued", 3)
    assert queue_ids(client, agent) == [*earlier, admission.request_id]
    assert journal.get(agent, admission.request_id)["attempts"] == 0


# Bug 6: leases are fenced.

def test_a_stale_holder_cannot_touch_a_request_leased_again(journal: Journal, clock: Clock,
                                                            client, agent: str):
    set_status(client, agent, "running")
    admission = admit(journal, agent)
    rid = admission.request_id
    assert journal.renew(rid, lease=admission.lease)
    clock.now += 60
    assert journal.sweep() == {agent}
    assert not journal.renew(rid, lease=admission.lease)
    leased = journal.lease_next(agent)
    assert leased["id"] == rid and leased["lease"] == 2
    assert complete(journal, rid, lease=admission.lease) == Completion.STALE
    assert journal.retry(rid, "late", lease=admission.lease) == (Retry.STALE, 0)
    assert journal.get(agent, rid)["status"] == "in_flight"
    assert journal.renew(rid, lease=2)
    assert complete(journal, rid, lease=2) == "completed"
    assert complete(journal, rid, lease=2) == Completion.STALE
    assert journal.retry(rid, "again", lease=2) == (Retry.STALE, 0)
    assert "lease" not in journal.get(agent, rid)


def test_a_late_answer_completes_a_swept_request_nobody_leased(journal: Journal, clock: Clock,
                                                               client, agent: str):
    waiting = queued(journal, agent, 1)
    set_status(client, agent, "running")
    rid = admit(journal, agent).request_id
    clock.now += 60
    journal.sweep()
    assert journal.get(agent, rid)["status"] == "queued"
    assert queue_ids(client, agent) == [rid, *waiting]
    assert complete(journal, rid) == "completed"
    assert queue_ids(client, agent) == waiting  # it leaves its queue: not delivered again
    assert journal.lease_next(agent)["id"] == waiting[0]
    assert journal.lease_next(agent) is None
    assert complete(journal, rid) == Completion.STALE  # completed once


def test_a_late_answer_completes_a_request_swept_to_failed(journal: Journal, clock: Clock,
                                                           client, agent: str):
    set_status(client, agent, "running")
    rid = admit(journal, agent).request_id
    for lease in (1, 2):
        assert journal.retry(rid, "reset", lease=lease)[0] == "queued"
        assert journal.lease_next(agent)["lease"] == lease + 1
    clock.now += 60
    journal.sweep()  # the third attempt's lease expired: failed
    assert journal.get(agent, rid)["status"] == "failed"
    assert complete(journal, rid, lease=2) == Completion.STALE
    assert complete(journal, rid, lease=3) == "completed"
    assert journal.get(agent, rid)["status"] == "completed"


def test_a_cancelled_request_is_never_completed(journal: Journal, agent: str):
    [rid] = queued(journal, agent, 1)
    journal.cancel(agent, rid)
    assert complete(journal, rid, lease=0) == Completion.STALE
    assert journal.get(agent, rid)["status"] == "cancelled"


def test_missing_request(journal: Journal):
    assert complete(journal, "req-gone") == "missing"
    assert journal.retry("req-gone", "x", lease=FIRST_LEASE) == ("missing", 0)
    assert not journal.renew("req-gone", lease=FIRST_LEASE)


# Bug 7: a failed or cancelled idempotency key admits a new request.

def test_a_cancelled_key_admits_a_new_request(journal: Journal, agent: str):
    first = admit(journal, agent, key="k1")
    assert first.outcome == "queued"
    repeat = admit(journal, agent, key="k1")
    assert (repeat.outcome, repeat.request_id, repeat.request_status) == (
        "idempotent", first.request_id, "queued")
    journal.cancel(agent, first.request_id)
    fresh = admit(journal, agent, key="k1")
    assert fresh.outcome == "queued" and fresh.request_id != first.request_id
    assert admit(journal, agent, key="k1").request_id == fresh.request_id


def test_a_failed_key_admits_a_new_request(journal: Journal, client, agent: str):
    set_status(client, agent, "running")
    first = admit(journal, agent, key="k2")
    for attempt in range(3):
        status, _ = journal.retry(first.request_id, "reset", lease=attempt + 1)
        if status == "queued":
            assert journal.lease_next(agent)["id"] == first.request_id
    assert journal.get(agent, first.request_id)["status"] == "failed"
    fresh = admit(journal, agent, key="k2")
    assert fresh.outcome == "forward" and fresh.request_id != first.request_id
    assert admit(journal, agent, key="k2").outcome == "idempotent"


def test_a_full_queue_keeps_the_key_of_the_failed_request(journal: Journal, client, agent: str):
    set_status(client, agent, "running")
    failed = admit(journal, agent, key="k3")
    journal.retry(failed.request_id, "reset", lease=failed.lease)
    for attempt in (2, 3):
        journal.lease_next(agent)
        journal.retry(failed.request_id, "reset", lease=attempt)
    set_status(client, agent, "stopped")
    queued(journal, agent, 5)
    assert admit(journal, agent, key="k3").outcome == "full"
    assert client.get(f"{PREFIX}idem:{agent}:k3").decode() == failed.request_id


# Bug 8: trim deletes what it drops from the listing, never a queued or in-flight request.

def test_trim_deletes_finished_records_beyond_the_limit(journal: Journal, client, agent: str):
    oldest_queued = admit(journal, agent, "/waiting").request_id
    set_status(client, agent, "running")
    finished = []
    for n in range(5):
        admission = admit(journal, agent, f"/done/{n}")
        complete(journal, admission.request_id)
        finished.append(admission.request_id)
    in_flight = admit(journal, agent, "/busy").request_id
    assert journal.trim(agent) == 3  # 7 listed, limit 3: the 4 oldest go, but not the queued
    listed = {r["id"] for r in journal.page(agent)[0]}
    assert listed == {oldest_queued, *finished[3:], in_flight}
    for rid in finished[:3]:
        assert not client.exists(f"{PREFIX}req:{rid}")
    assert journal.get(agent, oldest_queued)["status"] == "queued"


def test_trim_deletes_finished_records_past_the_retention(journal: Journal, clock: Clock,
                                                          client, agent: str):
    set_status(client, agent, "running")
    old = admit(journal, agent, "/old").request_id
    complete(journal, old)
    stuck = admit(journal, agent, "/stuck").request_id
    clock.now += 7200
    assert journal.trim(agent) == 1
    assert not client.exists(f"{PREFIX}req:{old}")
    assert [r["id"] for r in journal.page(agent)[0]] == [stuck]


# Bug 4: a drain claim belongs to the job it was made for.

def scheduled_claims(client: redis.Redis) -> list[tuple[str, str, dict]]:
    queue = rq.Queue(QUEUE, connection=client, serializer=JSONSerializer)
    return [(job.args[0], job.args[1], job.kwargs) for job in queue.get_jobs()]


def claim_of(client: redis.Redis, agent: str) -> tuple[str, str]:
    token, holder = client.hmget(f"{PREFIX}drain:{agent}", "token", "holder")
    return token.decode(), holder.decode()


def test_claims_are_owned(client: redis.Redis, agent: str):
    scheduler = ReplayScheduler(client, claim_ttl=30)
    scheduler.schedule(agent)
    scheduler.schedule(agent)  # deduplicated while the claim holds
    [(_, first, state)] = scheduled_claims(client)
    assert state == {"failures": 0, "retry_at": 0.0, "wait_until": 0.0}
    assert claim_of(client, agent) == (first, "")  # pending: no worker holds it yet
    client.delete(f"{PREFIX}drain:{agent}")  # as if it expired while the job waited
    scheduler.schedule(agent, DrainState(failures=2, retry_at=5.0))
    (_, second, state) = scheduled_claims(client)[1]
    assert state["failures"] == 2 and second != first
    assert not scheduler.hold(agent, first, "worker-a")
    scheduler.release(agent, first, "worker-a")  # not the holder: a no-op
    assert claim_of(client, agent) == (second, "")
    assert scheduler.hold(agent, second, "worker-b")
    assert claim_of(client, agent) == (second, "worker-b")
    assert 25_000 < client.pttl(f"{PREFIX}drain:{agent}") <= 30_000
    scheduler.release(agent, second, "worker-b")
    assert not client.exists(f"{PREFIX}drain:{agent}")
    assert scheduler.hold(agent, first, "worker-a")  # a free claim goes to whoever asks


def test_a_hand_off_keeps_the_claim(client: redis.Redis, agent: str):
    scheduler = ReplayScheduler(client, claim_ttl=30)
    scheduler.schedule(agent)
    [(_, claim, _)] = scheduled_claims(client)
    assert scheduler.hold(agent, claim, "worker-a")
    client.pexpire(f"{PREFIX}drain:{agent}", 1000)  # most of its TTL used
    handoff = DrainState(failures=3, retry_at=7.0, wait_until=9.0)
    assert scheduler.hand_off(agent, claim, "worker-a", handoff)
    assert claim_of(client, agent) == (claim, "worker-a")  # never let go
    assert 25_000 < client.pttl(f"{PREFIX}drain:{agent}") <= 30_000  # renewed, still expires
    scheduler.schedule(agent)  # the janitor's kick: a no-op, the claim is held
    assert scheduled_claims(client)[1:] == [(agent, claim, asdict(handoff))]
    client.hset(f"{PREFIX}drain:{agent}", "token", "someone-else")
    assert not scheduler.hand_off(agent, claim, "worker-a", handoff)  # another holds it
    assert len(scheduled_claims(client)) == 2


def test_ordered_admission_waits_behind_the_queue_and_the_drain(journal: Journal, client,
                                                                 agent: str):
    client.hset(f"{PREFIX}agent:{agent}", "ordered", "1")
    backlog = queued(journal, agent, 1)
    set_status(client, agent, "running")
    behind = admit(journal, agent)
    assert (behind.outcome, behind.wait, behind.position) == (Outcome.QUEUED, Wait.BACKLOG, 2)
    assert queue_ids(client, agent) == [*backlog, behind.request_id]
    # NOTE: a drain claim (pending or running) is a backlog too: a replay may be in flight
    client.delete(f"{PREFIX}queue:{agent}")
    client.hset(f"{PREFIX}drain:{agent}", "token", "t")
    assert admit(journal, agent).wait is Wait.BACKLOG
    client.delete(f"{PREFIX}drain:{agent}", f"{PREFIX}queue:{agent}")
    assert admit(journal, agent).outcome is Outcome.FORWARD


def test_max_concurrency_counts_forwarded_and_leased_requests(journal: Journal, client,
                                                              agent: str):
    client.hset(f"{PREFIX}agent:{agent}", "max_concurrency", "2")
    early = queued(journal, agent, 1)
    set_status(client, agent, "running")
    # NOTE: under max_concurrency the queue goes first, ordered or not
    waiting = admit(journal, agent)
    assert (waiting.outcome, waiting.wait) == (Outcome.QUEUED, Wait.BUSY)
    assert [journal.lease_next(agent)["id"] for _ in range(2)] == [early[0], waiting.request_id]
    assert complete(journal, early[0]) == Completion.COMPLETED
    first = admit(journal, agent)
    assert first.outcome is Outcome.FORWARD
    third = admit(journal, agent)
    assert (third.outcome, third.wait) == (Outcome.QUEUED, Wait.BUSY)
    with pytest.raises(AtCapacity):
        journal.lease_next(agent)
    assert complete(journal, first.request_id) == Completion.COMPLETED
    assert journal.lease_next(agent)["id"] == third.request_id
    client.hset(f"{PREFIX}agent:{agent}", "on_busy", "reject")
    assert admit(journal, agent).outcome is Outcome.BUSY
    journal.purge(agent)
    assert not client.exists(f"{PREFIX}flying:{agent}")
# The idle rule: the decision and its mark in one script (Journal.mark_idle).

def idle_field(client: redis.Redis, agent_id: str, name: str) -> str:
    return (client.hget(f"{PREFIX}agent:{agent_id}", name) or b"").decode()


@pytest.fixture
def serving(client: redis.Redis, agent: str) -> str:
    """A running agent its user wants running, last active at the clock's start."""
    set_status(client, agent, "running")
    client.hset(f"{PREFIX}agent:{agent}", mapping={"desired": "running",
                                                   "last_active": 1_700_000_000_000})
    return agent


def test_an_agent_is_idle_after_its_timeout_with_nothing_in_flight(
        journal: Journal, client, clock: Clock, serving: str):
    assert not journal.mark_idle(serving, 2.0)
    clock.now += 2.5
    assert journal.mark_idle(serving, 2.0)
    assert idle_field(client, serving, "idle") == "pending"
    assert not journal.mark_idle(serving, 2.0)  # NOTE: marked once


def test_a_request_in_flight_or_queued_keeps_it_running(journal: Journal, client, clock: Clock,
                                                       serving: str):
    forwarded = admit(journal, serving)
    assert forwarded.outcome is Outcome.FORWARD
    assert client.smembers(f"{PREFIX}flying:{serving}") == {forwarded.request_id.encode()}
    clock.now += 60
    assert not journal.mark_idle(serving, 2.0)  # NOTE: a slow request, or an open stream
    assert complete(journal, forwarded.request_id) == Completion.COMPLETED
    assert not client.exists(f"{PREFIX}flying:{serving}")
    released = int(idle_field(client, serving, "last_active"))
    assert clock.now * 1000 - 5 < released <= clock.now * 1000
    assert not journal.mark_idle(serving, 2.0)  # NOTE: active just now
    clock.now += 3
    set_status(client, serving, "stopped")
    admit(journal, serving)  # NOTE: queued
    set_status(client, serving, "running")
    clock.now += 3
    assert not journal.mark_idle(serving, 2.0)
    client.delete(f"{PREFIX}queue:{serving}")
    client.hset(f"{PREFIX}drain:{serving}", "claim", "c")
    assert not journal.mark_idle(serving, 2.0)  # NOTE: a drain is under way
    client.delete(f"{PREFIX}drain:{serving}")
    assert journal.mark_idle(serving, 2.0)


def test_a_request_after_the_mark_queues_and_says_wake(journal: Journal, client, clock: Clock,
                                                       serving: str):
    clock.now += 3
    assert journal.mark_idle(serving, 2.0)
    admission = admit(journal, serving)
    assert admission.outcome is Outcome.QUEUED and admission.idle
    client.hset(f"{PREFIX}agent:{serving}", "idle", "")
    assert admit(journal, serving).outcome is Outcome.FORWARD


def test_only_a_running_agent_its_user_wants_running_goes_idle(journal: Journal, client,
                                                               clock: Clock, serving: str):
    clock.now += 3
    client.hset(f"{PREFIX}agent:{serving}", "desired", "paused")
    assert not journal.mark_idle(serving, 2.0)
    client.hset(f"{PREFIX}agent:{serving}", mapping={"desired": "running", "status": "paused"})
    assert not journal.mark_idle(serving, 2.0)
    client.hdel(f"{PREFIX}agent:{serving}", "last_active")
    set_status(client, serving, "running")
    assert not journal.mark_idle(serving, 2.0)  # NOTE: a record older than the rule: counts
    assert idle_field(client, serving, "last_active")  # from now


# Completions in batches (journal/completions.py writes them so).

def test_a_batch_of_answers_is_recorded_each_by_its_own_fence(journal: Journal, client,
                                                               agent: str):
    set_status(client, agent, "running")
    first, second = (admit(journal, agent, f"/{n}").request_id for n in range(2))
    answers = [Answer(first, FIRST_LEASE, 200, [], b"one", False),
               Answer(second, FIRST_LEASE + 1, 200, [], b"two", False),  # NOTE: not its lease
               Answer("req-gone", FIRST_LEASE, 200, [], b"", False)]
    assert journal.write(answers) == [Completion.COMPLETED, Completion.STALE,
                                      Completion.MISSING]
    assert journal.get(agent, first)["resp_body"] == b"one"
    assert journal.get(agent, second)["status"] == "in_flight"


def test_a_batch_reloads_the_script_redis_lost(journal: Journal, client, agent: str):
    set_status(client, agent, "running")
    request_id = admit(journal, agent).request_id
    client.script_flush()  # NOTE: as a Redis restart without AOF of scripts would
    assert complete(journal, request_id) == Completion.COMPLETED
    client.script_flush()
    assert admit(journal, agent).outcome is Outcome.FORWARD  # NOTE: the lean ADMIT path too


def test_an_answer_and_the_next_lease_share_one_round_trip(journal: Journal, client,
                                                            agent: str):
    client.hset(f"{PREFIX}agent:{agent}", "max_concurrency", 1)
    first, second = queued(journal, agent, 2)
    leased = journal.lease_next(agent)
    answer = Answer(first, leased["lease"], 200, [], b"one", False, replayed=True)
    # NOTE: the answer frees the agent's one slot before the lease asks for it
    completion, record = journal.complete_and_lease(answer, agent)
    assert completion is Completion.COMPLETED and record["id"] == second
    assert journal.get(agent, first)["status"] == "completed"
    third = queued(journal, agent, 1)[0]
    stale = Answer(first, leased["lease"], 200, [], b"again", False, replayed=True)
    with pytest.raises(AtCapacity) as caught:  # NOTE: the second still holds the slot
        journal.complete_and_lease(stale, agent)
    assert caught.value.completion is Completion.STALE
    assert queue_ids(client, agent) == [third]


def test_live_entries_and_answers_are_written_in_order_in_one_batch(journal: Journal,
                                                                     client, agent: str):
    set_status(client, agent, "running")
    request_id = admit(journal, agent).request_id
    key = f"{PREFIX}respstream:{request_id}"
    client.script_flush()  # NOTE: the answer's script reloaded; the entries not sent twice
    completions = journal.write([
        Published(key, [{"k": "start", "lease": 1}, {"k": "data", "at": 0, "d": b"ok"}],
                  ttl_ms=30000),
        Published(key, [{"k": "end", "outcome": "completed", "size": 2}]),
        Answer(request_id, FIRST_LEASE, 200, [], b"ok", False)])
    assert completions == [Completion.COMPLETED]
    assert [fields[b"k"] for _, fields in client.xrange(key)] == [b"start", b"data", b"end"]
    assert 0 < client.pttl(key) <= 5000  # NOTE: COMPLETE let the stream go 5 s later
