"""The proxy sink ends every journaled record it admitted, whatever the agent answered."""

import dataclasses

import falcon
import falcon.testing
import pytest
import urllib3

from agentainer.api import http_errors as errors
from agentainer.api.following import IncompleteAnswer
from agentainer.api.inflight import InflightLimit, Slots
from agentainer.api.proxy import PATTERN, REQUEST_ID_HEADER, ProxySink
from agentainer.journal.follow import Followed
from agentainer.journal.journal import (
    FIRST_LEASE, Admission, Answer, Completion, Outcome, Retry, Wait,
)
from agentainer.statuses import AgentStatus, Desired, RequestStatus
from agentainer.tokens import RESUME_TOKEN_HEADER
from tests.helpers import FakeLive

AGENT = "a1b2c3d4e5f6"


class FakeJournal:
    """Admits every request as forwarded (or direct) and records how each one ended."""

    def __init__(self, outcome: Outcome = Outcome.FORWARD) -> None:
        self.outcome = outcome
        self.ended: list[tuple] = []

    def admit(self, ref, *, by_id, token_hash, request_id, request) -> Admission:
        if self.outcome is Outcome.DIRECT:
            return Admission(Outcome.DIRECT, AGENT, route="127.0.0.1:9",
                             agent_status=AgentStatus.RUNNING)
        return Admission(Outcome.FORWARD, AGENT, route="127.0.0.1:9", request_id=request_id,
                         lease=FIRST_LEASE)

    def retry(self, request_id, error, *, attempted=True, lease) -> tuple[Retry, int]:
        self.ended.append(("retry", request_id, error, attempted, lease))
        return Retry.QUEUED, 1

    def complete(self, request_id, **fields) -> Completion:
        self.ended.append(("complete", request_id, fields))
        return Completion.COMPLETED

    def submit(self, answer: Answer) -> None:  # NOTE: as Completions, but at once
        fields = dataclasses.asdict(answer)
        self.complete(fields.pop("request_id"), **fields)

    def live(self, request_id, **fields) -> FakeLive:
        self.live_capture = FakeLive()
        return self.live_capture

    def renew(self, request_id, *, lease) -> bool:
        return True


class FakeResponse:
    length_remaining = None  # NOTE: as for a chunked body

    def __init__(self, status: int, *headers: tuple[str, str], body: bytes = b"") -> None:
        self.status = status
        self.headers = urllib3.HTTPHeaderDict()
        for name, value in headers:
            self.headers.add(name, value)
        self.chunks = [body] if body else []
        self.closed = self.released = False

    def read1(self, amount: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        self.released = True


class FakeUpstream:
    def __init__(self, answer: FakeResponse | Exception) -> None:
        self.answer = answer

    def send(self, route, method, target, headers, body, *, resend) -> FakeResponse:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def client(journal: FakeJournal, answer: FakeResponse | Exception,
           scheduled: list[str] | None = None, down: list[str] | None = None,
           inflight: InflightLimit | None = None, follower=None,
           holds: Slots | None = None) -> falcon.testing.TestClient:
    app = falcon.App()
    errors.register(app)
    app.add_sink(ProxySink(journal, journal, FakeUpstream(answer),  # type: ignore[arg-type]
                           schedule=(scheduled if scheduled is not None else []).append,
                           on_down=(down if down is not None else []).append,
                           wake=lambda agent_id: None,
                           admin_token="admin-token-for-tests", max_body=1024,
                           capture_limit=1024,
                           inflight=inflight or InflightLimit(8), follower=follower,
                           hold=0, holds=holds or Slots(4)), PATTERN)
    return falcon.testing.TestClient(app)


def test_an_unexpected_failure_after_admission_is_a_failed_attempt():
    journal, scheduled = FakeJournal(), []
    result = client(journal, RuntimeError("boom"), scheduled).simulate_get(f"/agent/{AGENT}/x")
    assert result.status_code == 500 and result.json["error"] == "internal_error"
    request_id = result.headers[REQUEST_ID_HEADER]
    assert journal.ended == [("retry", request_id, "the proxy failed: RuntimeError('boom')",
                              True, FIRST_LEASE)]
    assert scheduled == [AGENT]


@pytest.mark.parametrize("answer", [
    FakeResponse(200, ("X(Bad)", "1"), body=b"ok"),
    FakeResponse(200, ("Content-Length", "2x"), body=b"ok"),
    FakeResponse(101, ("Upgrade", "x")),
])
def test_an_unpassable_answer_is_502_and_a_failed_attempt(answer):
    journal, down = FakeJournal(), []
    result = client(journal, answer, down=down).simulate_get(f"/agent/{AGENT}/x")
    assert result.status_code == 502 and result.json["error"] == "agent_bad_response"
    request_id = result.headers[REQUEST_ID_HEADER]
    assert result.json["data"] == {"request_id": request_id}
    [(kind, rid, error, attempted, _)] = journal.ended
    assert (kind, rid, attempted) == ("retry", request_id, True)
    assert "cannot pass on" in error and error in result.json["message"]
    assert answer.closed and answer.released and down == []


@pytest.mark.parametrize("method, status", [("HEAD", 200), ("GET", 204), ("GET", 304),
                                            ("HEAD", 404)])
def test_a_bodiless_answer_completes_its_record_before_it_is_sent(method, status):
    journal = FakeJournal()
    answer = FakeResponse(status, ("ETag", '"v1"'), ("Content-Length", "5"))
    result = client(journal, answer).simulate_request(method, f"/agent/{AGENT}/x")
    assert result.status_code == status and result.content == b""
    assert result.headers["ETag"] == '"v1"'
    [(kind, rid, fields)] = journal.ended
    assert (kind, rid) == ("complete", result.headers[REQUEST_ID_HEADER])
    assert (fields["status"], fields["body"], fields["truncated"], fields["error"]) == (
        status, b"", False, "")
    assert answer.released and not answer.closed


def test_a_bodiless_answer_of_a_direct_request_releases_its_connection():
    journal = FakeJournal(Outcome.DIRECT)
    answer = FakeResponse(200, ("Content-Length", "5"))
    result = client(journal, answer).simulate_head(f"/agent/{AGENT}/x")
    assert result.status_code == 200 and journal.ended == [] and answer.released


def test_a_streamed_answer_completes_when_read_to_its_end():
    journal = FakeJournal()
    answer = FakeResponse(200, ("Content-Type", "text/plain"), body=b"hello")
    result = client(journal, answer).simulate_get(f"/agent/{AGENT}/x")
    assert result.status_code == 200 and result.content == b"hello"
    [(kind, _, fields)] = journal.ended
    assert kind == "complete" and fields["body"] == b"hello" and fields["error"] == ""


def test_a_journaled_request_over_agent_max_inflight_is_queued_not_forwarded():
    journal, scheduled, inflight = FakeJournal(), [], InflightLimit(1)
    assert inflight.enter(AGENT)  # NOTE: another request to the agent, still in flight
    upstream_answer = FakeResponse(200, body=b"never sent")
    result = client(journal, upstream_answer, scheduled, inflight=inflight).simulate_post(
        f"/agent/{AGENT}/x", body=b"job")
    assert result.status_code == 202 and result.json["data"]["status"] == "queued"
    request_id = result.headers[REQUEST_ID_HEADER]
    assert result.headers["Location"] == f"/agents/{AGENT}/requests/{request_id}"
    [(kind, rid, error, attempted, _)] = journal.ended
    assert (kind, rid, attempted) == ("retry", request_id, False)
    assert "agent_max_inflight" in error and scheduled == [AGENT]
    assert upstream_answer.chunks == [b"never sent"]


def test_a_direct_request_over_agent_max_inflight_is_503_with_retry_after():
    inflight = InflightLimit(1)
    assert inflight.enter(AGENT)
    result = client(FakeJournal(Outcome.DIRECT), FakeResponse(200, body=b"x"),
                    inflight=inflight).simulate_get(f"/agent/{AGENT}/x")
    assert result.status_code == 503 and result.json["error"] == "agent_overloaded"
    assert result.headers["Retry-After"] == "5"


@pytest.mark.parametrize("answer", [FakeResponse(200, body=b"streamed"),
                                    FakeResponse(204), RuntimeError("boom")])
def test_a_request_leaves_the_agent_s_in_flight_count_when_it_ends(answer):
    inflight = InflightLimit(1)
    client(FakeJournal(), answer, inflight=inflight).simulate_get(f"/agent/{AGENT}/x")
    assert inflight.enter(AGENT)  # NOTE: the one slot is free again


class QueuingJournal(FakeJournal):
    """Admits every request as queued: its agent is down."""

    def admit(self, ref, *, by_id, token_hash, request_id, request) -> Admission:
        return Admission(Outcome.QUEUED, AGENT, request_id=request_id, position=1,
                         agent_status=AgentStatus.STOPPED, desired=Desired.RUNNING,
                         wait=Wait.DOWN)


class Follower:
    """Answers a held request with ``followed`` (None: the hold ran out)."""

    def __init__(self, followed=None) -> None:
        self.followed = followed
        self.opened: list[tuple] = []

    def open(self, agent_id, request_id, *, wait_until):
        self.opened.append((agent_id, request_id))
        return self.followed


def test_a_held_request_streams_what_it_follows_and_frees_its_hold():
    followed = Followed(status=201, headers=[("X-App", "1")],
                        request_status=RequestStatus.IN_FLIGHT,
                        offset=0, live=True, chunks=iter([b"a", b"", b"b"]), ended="completed")
    holds = Slots(1)
    result = client(QueuingJournal(), FakeResponse(200), follower=Follower(followed),
                    holds=holds).simulate_post(f"/agent/{AGENT}/x", headers={"Prefer": "wait=5"})
    assert (result.status_code, result.text) == (201, "ab")
    assert result.headers["Preference-Applied"] == "wait=5"
    assert result.headers["X-App"] == "1" and result.headers[RESUME_TOKEN_HEADER]
    assert holds.enter()  # NOTE: the slot came back when the answer ended


def test_past_hold_limit_a_queued_request_gets_202_at_once():
    holds, follower = Slots(1), Follower()
    assert holds.enter()
    result = client(QueuingJournal(), FakeResponse(200), follower=follower,
                    holds=holds).simulate_post(f"/agent/{AGENT}/x", headers={"Prefer": "wait=5"})
    assert result.status_code == 202 and "hold_limit" in result.json["message"]
    assert "Preference-Applied" not in result.headers and follower.opened == []


def test_a_request_that_fails_while_held_says_so():
    followed = Followed(status=None, headers=[], request_status=RequestStatus.FAILED, offset=0,
                        live=False, error="3 attempts failed")
    result = client(QueuingJournal(), FakeResponse(200), follower=Follower(followed)
                    ).simulate_post(f"/agent/{AGENT}/x", headers={"Prefer": "wait=5"})
    assert result.status_code == 502 and result.json["error"] == "request_failed"
    assert "failed while held (3 attempts failed)" in result.json["message"]


@pytest.mark.parametrize("ended, truncated", [("redelivered", False), ("completed", True)])
def test_a_held_answer_that_ends_short_is_cut_not_ended(ended, truncated):
    """The client must not take a redelivered attempt's first bytes, or a body cut at
    capture_limit, for the whole answer: the server cuts the connection instead."""
    followed = Followed(status=200, headers=[("Content-Length", "9")],
                        request_status=RequestStatus.IN_FLIGHT, offset=0, live=True,
                        chunks=iter([b"abc"]), ended=ended, truncated=truncated)
    with pytest.raises(IncompleteAnswer):
        client(QueuingJournal(), FakeResponse(200), follower=Follower(followed)
               ).simulate_post(f"/agent/{AGENT}/x", headers={"Prefer": "wait=5"})


def test_a_held_head_or_204_frees_its_hold_at_once():
    holds = Slots(1)
    followed = Followed(status=204, headers=[], request_status=RequestStatus.COMPLETED,
                        offset=0, live=False, ended="completed")
    result = client(QueuingJournal(), FakeResponse(200), follower=Follower(followed),
                    holds=holds).simulate_post(f"/agent/{AGENT}/x", headers={"Prefer": "wait=5"})
    assert result.status_code == 204
    assert holds.enter()
