"""Liveness, repeats and byte budgets of the journal against a real redis-server (no Docker).

Issue 8: a dead holder's work comes back at once; a script run twice (its reply lost in a
Redis restart) does its work once; storage is bounded by bytes on every path.
"""

import json
import time

import pytest
import redis

from agentainer.agents.store import AgentStore
from agentainer.keys import PREFIX
from agentainer.errors import Conflict, QueueFull
from agentainer.journal import scripts
from agentainer.journal.janitor import Janitor
from agentainer.journal.journal import IncomingRequest, Journal, Retry, allocated, new_request_id
from agentainer.journal.liveness import Liveness
from agentainer.journal.replay import ReplayScheduler
from agentainer.periodic import Periodic
from tests.helpers import wait_for
from tests.integration.test_journal import (  # noqa: F401 - fixtures
    HOLDER, Clock, admit, agent, client, clock, complete, queue_ids, queued, set_status,
)

OTHER = "server-test-2"


def make_journal(client: redis.Redis, clock: Clock, holder: str = HOLDER, **limits) -> Journal:
    settings = {"queue_limit": 5, "max_attempts": 3, "retention": 3600, "lease": 30,
                "history_limit": 100, **limits}
    return Journal(client, holder=holder, clock=clock, **settings)


def big(journal: Journal, agent_id: str, size: int, request_id: str | None = None):
    incoming = IncomingRequest(method="POST", path="/", query="", headers=[],
                               body=b"x" * size, idempotency_key="")
    return journal.admit(agent_id, by_id=True, token_hash="",
                         request_id=request_id or new_request_id(), request=incoming)


def stored(client: redis.Redis) -> int:
    return int(client.get(f"{PREFIX}journal_bytes") or 0)


def queued_bytes(client: redis.Redis, agent_id: str) -> int:
    return int(client.hget(f"{PREFIX}queue_bytes", agent_id) or 0)


# Deliverable 1: liveness.

def test_a_dead_holders_leases_go_back_to_the_front(client, clock, agent):
    mine, theirs = make_journal(client, clock), make_journal(client, clock, OTHER)
    waiting = queued(mine, agent, 2)
    set_status(client, agent, "running")
    lost, kept = admit(theirs, agent, "/lost"), admit(mine, agent, "/kept")
    liveness = Liveness(client, timeout=1)
    liveness.beat(HOLDER)
    liveness.beat(OTHER)
    client.delete(f"{PREFIX}alive:{OTHER}")  # its heartbeat expired: kill -9
    assert liveness.dead() == [OTHER]
    assert theirs.reap(OTHER) == {agent}
    assert queue_ids(client, agent) == [lost.request_id, *waiting]
    record = mine.get(agent, lost.request_id)
    assert record["status"] == "queued" and "died" in record["error"]
    assert mine.get(agent, kept.request_id)["status"] == "in_flight"  # a live holder's
    assert not client.exists(f"{PREFIX}held:{OTHER}")
    assert theirs.reap(OTHER) == set()  # repeated by another janitor: nothing more


def test_a_reaped_request_answered_late_still_completes_once(client, clock, agent):
    journal = make_journal(client, clock)
    set_status(client, agent, "running")
    admission = admit(journal, agent)
    journal.reap(HOLDER)  # wrongly taken for dead (its beats were late)
    assert complete(journal, admission.request_id) == "completed"
    assert queue_ids(client, agent) == []
    assert complete(journal, admission.request_id) == "stale"


def test_the_heartbeat_keeps_a_holder_alive_until_it_stops(client):
    liveness = Liveness(client, timeout=1)
    beat = Periodic("heartbeat", liveness.interval, lambda: liveness.beat("monitor-test"))
    beat.start(now=True)
    try:
        time.sleep(1.5)
        assert "monitor-test" not in liveness.dead()
    finally:
        beat.stop()
    wait_for(lambda: "monitor-test" in liveness.dead(), timeout=5, message="expiry")
    liveness.forget("monitor-test")
    assert "monitor-test" not in liveness.dead()


def test_a_dead_workers_claims_and_reservations_are_freed(client, clock, agent):
    scheduler = ReplayScheduler(client, claim_ttl=300)
    assert scheduler.hold(agent, "claim-1", "worker-dead")
    store = AgentStore(client, holder="server-dead")
    store.reserve("a" * 12, "half-deployed", ("invoke-hash", "manage-hash"))
    client.hset(f"{PREFIX}reserved", "c" * 12, json.dumps(  # written before the split
        {"name": "half-old", "token_hash": "old-hash", "holder": "server-dead"}))
    client.hset(f"{PREFIX}names", "half-old", "c" * 12)
    client.hset(f"{PREFIX}tokens", "old-hash", "c" * 12)
    liveness = Liveness(client, timeout=1)
    for holder in ("worker-dead", "server-dead"):
        liveness.beat(holder)
        client.delete(f"{PREFIX}alive:{holder}")
    janitor = Janitor(store, make_journal(client, clock), scheduler, liveness)
    janitor.run_once()
    token, holder = client.hmget(f"{PREFIX}drain:{agent}", "token", "holder")
    assert token != b"claim-1" and holder == b""  # freed, and a fresh drain is pending
    assert client.hget(f"{PREFIX}names", "half-deployed") is None
    for name in ("half-deployed", "half-old"):
        assert client.hget(f"{PREFIX}names", name) is None
    for token_hash in ("invoke-hash", "manage-hash", "old-hash"):
        assert client.hget(f"{PREFIX}tokens", token_hash) is None
    assert liveness.dead() == []
    assert not client.exists(f"{PREFIX}claims:worker-dead")


def test_a_finished_deploy_leaves_no_reservation(client):
    store = AgentStore(client, holder="server-a")
    store.reserve("b" * 12, "kept", ())
    store.release("b" * 12, "kept", ())
    assert client.hlen(f"{PREFIX}reserved") == 0


def test_a_token_held_in_either_scope_is_not_reserved_again(client):
    store = AgentStore(client, holder="server-a")
    store.reserve("d" * 12, "first", ("invoke-1", "manage-1"))
    with pytest.raises(Conflict) as caught:
        store.reserve("e" * 12, "second", ("invoke-2", "manage-1"))
    assert caught.value.code == "token_in_use"
    # NOTE: the refused deploy took back what it had claimed, and nothing of the first's
    assert client.hget(f"{PREFIX}names", "second") is None
    assert client.hget(f"{PREFIX}tokens", "invoke-2") is None
    assert client.hget(f"{PREFIX}tokens", "manage-1") == b"d" * 12
    assert not client.hexists(f"{PREFIX}reserved", "e" * 12)
    store.release("d" * 12, "first", ("invoke-1", "manage-1"))
    assert client.hmget(f"{PREFIX}tokens", "invoke-1", "manage-1") == [None, None]


# Deliverable 2: a command resent after a Redis restart does its work once.

def test_admitting_a_request_id_again_stores_nothing_more(client, clock, agent):
    journal = make_journal(client, clock)
    rid = new_request_id()
    first = big(journal, agent, 100, rid)
    before = stored(client)
    again = big(journal, agent, 100, rid)
    assert (again.outcome, again.position) == (first.outcome, first.position) == ("queued", 1)
    assert queue_ids(client, agent) == [rid] and stored(client) == before
    set_status(client, agent, "running")
    rid = new_request_id()
    assert big(journal, agent, 100, rid).outcome == "forward"
    assert big(journal, agent, 100, rid).outcome == "forward"
    assert int(client.hget(f"{PREFIX}counters", "proxied")) == 1


def test_a_lease_repeated_with_its_ticket_gets_the_same_request(client, clock, agent):
    queued(make_journal(client, clock), agent, 2)
    lease = client.register_script(scripts.LEASE)
    args = [agent, 1, 30_000, HOLDER, "ticket-1"]
    first, again = lease(keys=[], args=args), lease(keys=[], args=args)
    assert first == again
    other = lease(keys=[], args=[agent, 1, 30_000, HOLDER, "ticket-2"])
    assert dict(zip(other[::2], other[1::2]))[b"id"] != dict(zip(first[::2], first[1::2]))[b"id"]


# Deliverable 4: bounded storage.

def test_the_journal_byte_budget_refuses_and_stores_nothing(client, clock, agent):
    journal = make_journal(client, clock, max_bytes=10_000, queue_max_bytes=100_000)
    assert big(journal, agent, 4000).outcome == "queued"
    assert big(journal, agent, 4000).outcome == "queued"
    before = (stored(client), queue_ids(client, agent))
    refused = big(journal, agent, 4000)
    assert refused.outcome == "over"
    assert (stored(client), queue_ids(client, agent)) == before
    set_status(client, agent, "running")
    assert big(journal, agent, 4000).outcome == "over"  # forwarding is journaled too


def test_the_queue_byte_budget_is_per_agent(client, clock, agent):
    journal = make_journal(client, clock, queue_max_bytes=6000)
    assert big(journal, agent, 4000).outcome == "queued"
    assert big(journal, agent, 4000).outcome == "full"
    assert queued_bytes(client, agent) > 4000 and len(queue_ids(client, agent)) == 1


def test_bytes_are_given_back_as_requests_leave(client, clock, agent):
    journal = make_journal(client, clock, history_limit=1)
    first = big(journal, agent, 1000)
    clock.now += 1  # NOTE: arrivals a whole millisecond apart, so trim's order is known
    second = big(journal, agent, 1000)
    assert queued_bytes(client, agent) == stored(client) > 2000
    leased = journal.lease_next(agent)
    assert queued_bytes(client, agent) == stored(client) // 2
    assert complete(journal, leased["id"], lease=leased["lease"]) == "completed"
    journal.cancel(agent, second.request_id)
    assert queued_bytes(client, agent) == 0
    journal.requeue(agent, second.request_id)
    assert queued_bytes(client, agent) == int(client.hget(f"{PREFIX}req:{second.request_id}",
                                                          "size"))
    journal.cancel(agent, second.request_id)
    assert journal.trim(agent) == 1  # history_limit 1: the older finished one goes
    assert stored(client) == int(client.hget(f"{PREFIX}req:{second.request_id}", "size"))
    journal.purge(agent)
    assert stored(client) == 0 and queued_bytes(client, agent) == 0
    assert first.request_id  # NOTE: deleted by trim above


def test_queue_limit_holds_for_a_forwarded_request_that_found_the_agent_down(client, clock,
                                                                             agent):
    journal = make_journal(client, clock, queue_limit=2)
    queued(journal, agent, 2)
    set_status(client, agent, "running")
    admission = admit(journal, agent, "/late", key="k1")
    before = stored(client)
    assert journal.retry(admission.request_id, "refused", attempted=False,
                         lease=admission.lease) == (Retry.FULL, 0)
    assert not client.exists(f"{PREFIX}req:{admission.request_id}")
    assert stored(client) < before and len(queue_ids(client, agent)) == 2
    assert admit(journal, agent, "/late", key="k1").outcome == "forward"  # key released


def test_a_requeue_by_hand_respects_the_queue_limit(client, clock, agent):
    journal = make_journal(client, clock, queue_limit=1)
    [rid] = queued(journal, agent, 1)
    journal.cancel(agent, rid)
    queued(journal, agent, 1)
    with pytest.raises(QueueFull):
        journal.requeue(agent, rid)


def test_completed_bodies_are_dropped_after_body_retention(client, clock, agent):
    journal = make_journal(client, clock, body_retention=60)
    set_status(client, agent, "running")
    admission = big(journal, agent, 5000)
    journal.complete(admission.request_id, status=200, headers=[], body=b"y" * 5000,
                     truncated=False, lease=admission.lease)
    full = stored(client)
    assert journal.drop_bodies() == 0
    clock.now += 61
    assert journal.drop_bodies() == 1
    record = journal.get(agent, admission.request_id)
    assert record["body"] == b"" and record["resp_truncated"] and record["status"] == "completed"
    assert stored(client) == full - 2 * allocated(5000)
    assert json.loads(client.hget(f"{PREFIX}req:{admission.request_id}", "resp_headers")) == []


def test_a_dead_processs_lifecycle_lock_is_freed(client):
    dead, alive = AgentStore(client, holder="monitor-dead"), AgentStore(client, holder="server-a")
    with dead.lock("agent-x"):
        with alive.lock("agent-x", wait=False) as held:
            assert not held
        assert alive.release_locks("server-a") == 0  # only the named holder's go
        assert dead.release_locks("monitor-dead") == 1  # as the janitor does once it died
        with alive.lock("agent-x", wait=False) as held:
            assert held
    assert not client.exists(f"{PREFIX}locks:server-a", f"{PREFIX}locks:monitor-dead")
