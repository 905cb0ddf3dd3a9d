"""Replay: a drain job's deliveries, failures, time slice and claim (fakes, no Redis)."""

import socket
import threading
from collections.abc import Iterator

import pytest
import urllib3

from agentainer.journal.journal import AtCapacity, Completion, Retry
from agentainer.journal.replay import LEASE_GRACE, ROOM_POLL_CAP, DrainState, Drainer
from agentainer.journal.upstream import RENEW_EVERY, AgentDown, BrokenResponse
from agentainer.statuses import AgentStatus
from tests.helpers import FakeLive


def test_renewals_come_well_within_a_lease():
    # a holder may block for connect + read timeout after its last renewal; the lease and
    # the claim last that plus LEASE_GRACE
    assert RENEW_EVERY < LEASE_GRACE


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Response:
    """An upstream response whose chunks take ``pace`` seconds each; ``error`` ends it."""

    length_remaining = None  # NOTE: as for a chunked body

    def __init__(self, clock: Clock, chunks: list[bytes], *, pace: float = 0.0,
                 error: Exception | None = None) -> None:
        self.status = 200
        self.headers = urllib3.HTTPHeaderDict({"Content-Type": "text/plain"})
        self._clock = clock
        self._chunks = list(chunks)
        self._pace = pace
        self._error = error
        self.closed = self.released = False

    def read1(self, amount: int) -> bytes:
        if self._chunks:
            self._clock.now += self._pace
            return self._chunks.pop(0)
        if self._error:
            raise self._error
        return b""

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        self.released = True


class Upstream:
    """Answers each request with the next item of ``replies`` (a Response or an exception)."""

    def __init__(self, replies: list) -> None:
        self.replies = list(replies)
        self.sent: list[str] = []

    def send(self, route, method, target, headers, body, *, resend):
        self.sent.append(target)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


class Journal:
    """A queue of records; retry puts a request back at the front, as the real one does."""

    def __init__(self, paths: list[str]) -> None:
        self.queue = [{"id": f"req-{n}", "path": path, "query": "", "method": "POST",
                       "headers": [], "body": b""} for n, path in enumerate(paths)]
        self.leases: dict[str, int] = {}
        self.calls: list[tuple] = []

    def lease_next(self, agent_id):
        if not self.queue:
            return None
        record = self.queue.pop(0)
        self.leases[record["id"]] = self.leases.get(record["id"], 0) + 1
        return {**record, "lease": self.leases[record["id"]]}

    def retry(self, request_id, error, *, attempted, from_queue, lease):
        self.calls.append(("retry", request_id, attempted, from_queue, lease))
        self.queue.insert(0, {"id": request_id, "path": "/again", "query": "",
                              "method": "POST", "headers": [], "body": b""})
        return Retry.QUEUED, 1

    def write(self, answers):
        for answer in answers:
            self.calls.append(("complete", answer.request_id, answer.body, answer.truncated,
                               answer.lease))
        return [Completion.COMPLETED] * len(answers)

    def complete_and_lease(self, answer, agent_id):
        """As the real one: the answer recorded, then the next request leased."""
        return self.write([answer])[0], self.lease_next(agent_id)

    def live(self, request_id, **fields) -> FakeLive:
        return FakeLive()

    def renew(self, request_id, *, lease):
        self.calls.append(("renew", request_id, lease))
        return True

    def queue_length(self, agent_id):
        return len(self.queue)


class Scheduler:
    """The drain claim as ReplayScheduler keeps it. With ``janitor`` set, schedule() (as the
    janitor calls it every second in every server) runs before and after every step."""

    def __init__(self) -> None:
        self.holder: str | None = None
        self.events: list[tuple] = []
        self.janitor = False

    def _kick(self) -> None:
        if self.janitor:
            self.schedule("a1")

    def hold(self, agent_id, claim, holder):
        self._kick()
        if self.holder in (None, claim):
            self.holder = claim
            return True
        return False

    def release(self, agent_id, claim, holder):
        self._kick()
        self.events.append(("release", claim))
        if self.holder == claim:
            self.holder = None
        self._kick()

    def hand_off(self, agent_id, claim, holder, state):
        if not self.hold(agent_id, claim, holder):
            return False
        self._kick()
        self.events.append(("hand_off", claim, state))
        self._kick()
        return True

    def schedule(self, agent_id, state=DrainState()):
        if self.holder is None:  # SET NX
            self.holder = f"fresh-{len(self.events)}"
            self.events.append(("schedule", self.holder, state))


class Store:
    def __init__(self, route: str) -> None:
        self.status, self.route = AgentStatus.RUNNING, route

    def routing(self, agent_id):
        return self.status, self.route


@pytest.fixture(scope="module")
def route() -> Iterator[str]:
    """A local port that accepts connections (the agent's app), and closes them."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)

        def accept() -> None:  # NOTE: a backlog that fills up would stop accepting
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:
                    return
                connection.close()

        threading.Thread(target=accept, daemon=True).start()
        yield "127.0.0.1:%d" % listener.getsockname()[1]
        listener.shutdown(socket.SHUT_RDWR)


def drainer(route: str, journal: Journal, upstream: Upstream, clock: Clock,
            **overrides) -> tuple[Drainer, Scheduler]:
    scheduler = Scheduler()
    settings = {"drain_wait": 30.0, "retry_base": 1.0, "retry_cap": 8.0, "capture_limit": 10,
                "time_slice": 10.0, "rand": lambda: 1.0, **overrides}
    return Drainer(store=Store(route), journal=journal, scheduler=scheduler, upstream=upstream,
                   holder="worker-test", sleep=clock.sleep, clock=clock, **settings), scheduler


def ok(clock: Clock, body: bytes = b"ok", pace: float = 0.0) -> Response:
    return Response(clock, [body], pace=pace)


def test_delivers_in_order_and_releases_its_claim(route):
    clock = Clock()
    journal = Journal(["/a", "/b"])
    upstream = Upstream([ok(clock), ok(clock)])
    job, scheduler = drainer(route, journal, upstream, clock)
    assert job.drain("a1", "claim-1") == 2
    assert upstream.sent == ["/a", "/b"]
    assert [c[1] for c in journal.calls if c[0] == "complete"] == ["req-0", "req-1"]
    assert scheduler.events == [("release", "claim-1")] and scheduler.holder is None


def test_agent_down_goes_back_to_the_front_untried(route):
    clock = Clock()
    journal = Journal(["/a", "/b"])
    upstream = Upstream([AgentDown("refused"), ok(clock), ok(clock)])
    job, _ = drainer(route, journal, upstream, clock)
    assert job.drain("a1", "claim-1") == 2
    assert journal.calls[0] == ("retry", "req-0", False, True, 1)
    assert upstream.sent == ["/a", "/again", "/b"]
    assert ("complete", "req-0", b"ok", False, 2) in journal.calls


@pytest.mark.parametrize("error", [
    BrokenResponse("the agent's response broke off", timeout=False),
    BrokenResponse("the agent went silent mid-response", timeout=True),
])
def test_a_broken_response_body_is_a_failed_attempt(route, error):
    clock = Clock()
    journal = Journal(["/a"])
    broken = Response(clock, [b"part"], error=error)
    upstream = Upstream([broken, ok(clock)])
    job, _ = drainer(route, journal, upstream, clock)
    assert job.drain("a1", "claim-1") == 1
    assert journal.calls[0] == ("retry", "req-0", True, True, 1)
    assert broken.closed and broken.released
    assert 1000.5 <= clock.now  # backed off before the second try


def test_capture_is_bounded_and_the_lease_renewed_while_reading(route):
    clock = Clock()
    journal = Journal(["/big"])
    chunks = [b"0123456", b"789abcd", b"efg"]
    upstream = Upstream([Response(clock, chunks, pace=RENEW_EVERY)])
    job, _ = drainer(route, journal, upstream, clock)
    assert job.drain("a1", "claim-1") == 1
    assert ("complete", "req-0", b"0123456789", True, 1) in journal.calls
    assert sum(1 for call in journal.calls if call == ("renew", "req-0", 1)) >= 2


def test_a_used_slice_hands_off_to_a_fresh_job(route):
    clock = Clock()
    journal = Journal([f"/{n}" for n in range(6)])
    upstream = Upstream([ok(clock, pace=3.0) for _ in range(6)])
    job, scheduler = drainer(route, journal, upstream, clock)
    assert job.drain("a1", "claim-1") == 4  # 12 s of deliveries: the slice is 10 s
    assert scheduler.events == [("hand_off", "claim-1", DrainState())]
    assert scheduler.holder == "claim-1"  # kept for the next job, never released
    assert upstream.sent == ["/0", "/1", "/2", "/3"]


def test_the_janitor_cannot_start_a_fresh_drain_during_a_hand_off(route):
    clock = Clock()
    journal = Journal(["/a"])
    upstream = Upstream([AgentDown("refused"), AgentDown("refused")])
    job, scheduler = drainer(route, journal, upstream, clock, retry_base=4.0, retry_cap=100.0)
    scheduler.holder, scheduler.janitor = "claim-1", True  # as schedule() left it
    assert job.drain("a1", "claim-1") == 0
    handoff = DrainState(failures=2, retry_at=1012.0)
    assert scheduler.events == [("hand_off", "claim-1", handoff)]  # no fresh drain
    assert scheduler.holder == "claim-1"
    resumed, _ = drainer(route, journal, upstream, clock, retry_base=4.0, retry_cap=100.0)
    resumed.scheduler = scheduler
    upstream.replies = [ok(clock)]
    assert resumed.drain("a1", "claim-1", handoff) == 1
    assert clock.now == 1012.0  # the backoff held across the hand-off
    assert scheduler.events[1] == ("release", "claim-1")


def test_a_claim_taken_before_the_hand_off_gets_no_job(route):
    clock = Clock()
    journal = Journal(["/0", "/1"])
    upstream = Upstream([ok(clock, pace=11.0)])
    job, scheduler = drainer(route, journal, upstream, clock)
    completed = journal.write

    def complete_and_lose_the_claim(*args, **kwargs):
        scheduler.holder = "claim-2"  # as if it expired and a later drain took it
        return completed(*args, **kwargs)

    journal.write = complete_and_lose_the_claim  # type: ignore[method-assign]
    assert job.drain("a1", "claim-1") == 1  # 11 s: the slice is used, one request left
    assert scheduler.events == [] and scheduler.holder == "claim-2"


def test_an_unexpected_error_releases_the_claim(route):
    clock = Clock()
    journal = Journal(["/a"])
    journal.lease_next = lambda agent_id: 1 / 0
    job, scheduler = drainer(route, journal, Upstream([]), clock)
    with pytest.raises(ZeroDivisionError):
        job.drain("a1", "claim-1")
    assert scheduler.events == [("release", "claim-1")] and scheduler.holder is None


def test_an_emptied_queue_needs_no_hand_off(route):
    clock = Clock()
    journal = Journal(["/0", "/1"])
    upstream = Upstream([ok(clock, pace=6.0), ok(clock, pace=6.0)])
    job, scheduler = drainer(route, journal, upstream, clock)
    assert job.drain("a1", "claim-1") == 2
    assert scheduler.events == [("release", "claim-1")]


def test_a_backoff_past_the_slice_is_handed_off(route):
    clock = Clock()
    journal = Journal(["/a"])
    upstream = Upstream([AgentDown("refused"), AgentDown("refused"), AgentDown("refused")])
    job, scheduler = drainer(route, journal, upstream, clock, retry_base=4.0, retry_cap=100.0)
    assert job.drain("a1", "claim-1") == 0
    assert scheduler.events[-1] == ("hand_off", "claim-1",
                                    DrainState(failures=2, retry_at=1012.0))
    assert clock.now == 1010.0  # failed at 1000 and 1004 (4 s backoff), no sleep past the slice
    state = scheduler.events[-1][2]
    resumed, scheduler = drainer(route, journal, upstream, clock, retry_base=4.0,
                                 retry_cap=100.0)
    upstream.replies = [ok(clock)]
    assert resumed.drain("a1", "claim-1", state) == 1
    assert clock.now == 1012.0  # the backoff was kept across the hand-off


def test_waiting_for_the_app_is_handed_off_then_given_up():
    clock = Clock()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        route = "127.0.0.1:%d" % closed.getsockname()[1]  # bound, not listening: refused
        job, scheduler = drainer(route, Journal(["/a"]), Upstream([]), clock, drain_wait=25.0)
        assert job.drain("a1", "claim-1") == 0
        (_, _, state) = scheduler.events[-1]
        assert state.wait_until == pytest.approx(1025.0)
        job, scheduler = drainer(route, Journal(["/a"]), Upstream([]), clock, drain_wait=25.0)
        job.drain("a1", "claim-1", state)  # 1010 to 1020: handed off again, same deadline
        assert scheduler.events[-1] == ("hand_off", "claim-1", state)
        job.drain("a1", "claim-1", state)
        assert clock.now == pytest.approx(1025.0)
        assert scheduler.events[-1] == ("release", "claim-1")  # gave up: no hand-off


def test_a_job_whose_claim_is_taken_gives_way(route):
    clock = Clock()
    journal = Journal(["/a"])
    job, scheduler = drainer(route, journal, Upstream([]), clock)
    scheduler.holder = "claim-2"
    assert job.drain("a1", "claim-1") == 0
    assert journal.queue and scheduler.holder == "claim-2"


def test_a_stopped_agent_ends_the_drain(route):
    clock = Clock()
    journal = Journal(["/a"])
    job, scheduler = drainer(route, journal, Upstream([]), clock)
    job.store.status = AgentStatus.STOPPED
    assert job.drain("a1", "claim-1") == 0
    assert scheduler.events == [("release", "claim-1")] and journal.queue


class BusyJournal(Journal):
    """An agent at max_concurrency for the first ``busy`` leases."""

    def __init__(self, paths: list[str], busy: int) -> None:
        super().__init__(paths)
        self.busy = busy

    def lease_next(self, agent_id):
        if self.busy:
            self.busy -= 1
            raise AtCapacity(agent_id)
        return super().lease_next(agent_id)


def test_an_agent_at_capacity_is_polled_for_room_with_backoff(route):
    clock = Clock()
    journal = BusyJournal(["/a"], busy=8)
    job, scheduler = drainer(route, journal, Upstream([ok(clock)]), clock)
    start = clock.now
    assert job.drain("a1", "claim-1") == 1
    waited = clock.now - start
    assert ROOM_POLL_CAP * 3 < waited < ROOM_POLL_CAP * 8  # NOTE: doubling from 20 ms, capped
    assert scheduler.events[-1] == ("release", "claim-1")


def test_an_agent_at_capacity_for_the_whole_slice_hands_off(route):
    clock = Clock()
    journal = BusyJournal(["/a"], busy=10_000)
    job, scheduler = drainer(route, journal, Upstream([]), clock, time_slice=5.0)
    assert job.drain("a1", "claim-1") == 0
    assert scheduler.events[-1][:2] == ("hand_off", "claim-1")


def test_a_request_queued_behind_the_claim_after_the_last_lease_is_drained_next(route):
    """An ordered agent's new request queues while a drain holds the claim; if it lands
    after the drain found the queue empty, the drain schedules another as it lets go."""
    clock = Clock()
    journal = Journal(["/a"])
    real_lease = journal.lease_next

    def lease_then_arrive(agent_id):
        record = real_lease(agent_id)
        if record is None and not journal.calls[-1][0] == "arrived":
            journal.calls.append(("arrived",))
            journal.queue.append({"id": "req-late", "path": "/late", "query": "",
                                  "method": "POST", "headers": [], "body": b""})
        return record

    journal.lease_next = lease_then_arrive
    job, scheduler = drainer(route, journal, Upstream([ok(clock)]), clock)
    assert job.drain("a1", "claim-1") == 1
    assert [event[0] for event in scheduler.events[-2:]] == ["release", "schedule"]
