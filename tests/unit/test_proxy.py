"""The proxy's header rules, lease renewal on streams, and stale kept-alive connections."""

import dataclasses
import http.client
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
import urllib3
import waitress.task

from agentainer.journal import upstream as upstream_module
from agentainer.journal.journal import FIRST_LEASE, Answer
from agentainer.journal.upstream import (
    HOP_BY_HOP, AgentFailed, BadResponse, BrokenResponse, Capture, Relay, StaleConnection,
    Upstream, forward_headers, relayable, replay_headers, response_headers, stored_headers,
)
from tests.helpers import FakeLive

CLIENT = [("Host", "127.0.0.1:8081"), ("Connection", "keep-alive, X-Secret-Hop"),
          ("X-Secret-Hop", "1"), ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
          ("Upgrade", "h2c"), ("Proxy-Authorization", "Basic x"),
          ("X-Agentainer-Replay", "true"), ("X-Agentainer-Request-Id", "req-spoofed"),
          ("X-Forwarded-For", "6.6.6.6"), ("Authorization", "Bearer token"),
          ("Cookie", "a=b"), ("Accept", "text/event-stream"), ("X-Custom", "kept")]


def names(headers):
    return [name.lower() for name, _ in headers]


def test_forward_drops_hop_by_hop_own_and_spoofable_headers():
    sent = forward_headers(CLIENT, client_ip="10.0.0.9", proto="http", host="example",
                           strip_authorization=False)
    assert names(sent) == ["authorization", "cookie", "accept", "x-custom",
                           "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]
    assert dict(sent)["X-Forwarded-For"] == "10.0.0.9"


def test_forward_strips_agentainer_authorization():
    sent = forward_headers(CLIENT, client_ip="", proto="http", host="h",
                           strip_authorization=True)
    assert "authorization" not in names(sent)


def test_stored_headers_keep_secrets_for_replay_but_authorization_apart():
    stored = stored_headers(CLIENT)
    assert dict(stored)["Cookie"] == "a=b" and "authorization" not in names(stored)
    assert "host" not in names(stored) and "x-agentainer-replay" not in names(stored)
    assert "x-secret-hop" not in names(stored)
    assert replay_headers(stored) == stored


def test_replay_leaves_out_headers_redacted_by_older_versions():
    assert replay_headers([("Cookie", "[redacted]"), ("Accept", "*/*")]) == [("Accept", "*/*")]


def test_response_headers_drop_hop_by_hop_and_connection_named():
    upstream = urllib3.HTTPHeaderDict()
    for name, value in [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked"),
                        ("Connection", "close, X-Internal"), ("X-Internal", "1"),
                        ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]:
        upstream.add(name, value)
    assert response_headers(upstream) == [("Content-Type", "text/plain"),
                                          ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]


def test_response_headers_drop_the_agents_x_agentainer_headers():
    upstream = urllib3.HTTPHeaderDict({"X-Agentainer-Request-Id": "req-spoofed",
                                       "x-agentainer-idempotent-replay": "true",
                                       "X-Agentainerish": "kept"})
    assert response_headers(upstream) == [("X-Agentainerish", "kept")]


def agent_headers(*pairs: tuple[str, str]) -> urllib3.HTTPHeaderDict:
    headers = urllib3.HTTPHeaderDict()
    for name, value in pairs:
        headers.add(name, value)
    return headers


def test_response_headers_drop_what_waitress_calls_hop_by_hop():
    assert waitress.task.hop_by_hop <= HOP_BY_HOP
    upstream = agent_headers(("Trailers", "x"), ("Keep-Alive", "a\nb"), ("X-Kept", "1"))
    assert response_headers(upstream) == [("X-Kept", "1")]  # dropped before any check


def test_transfer_encoding_overrides_content_length():
    upstream = agent_headers(("Transfer-Encoding", "chunked"), ("Content-Length", "99"),
                             ("Content-Length", "nonsense"), ("X-Kept", "1"))
    assert response_headers(upstream) == [("X-Kept", "1")]


@pytest.mark.parametrize("header", [
    ("X-Tab", "a\tb"), ("X-Latin", "caf\xe9"), ("Content-Length", "12"),
    ("Content-Length", "0  "), ("X-Agentainer-Spoof", "a\nb"), ("x!#$%&'*+-.^_`|~9", "1"),
])
def test_passable_response_headers(header):
    assert response_headers(agent_headers(header)) == ([] if "Agentainer" in header[0]
                                                       else [header])


@pytest.mark.parametrize("header", [
    ("X(Bad)", "1"), ("X/Bad", "1"), ("X-Bad\xe9", "1"),            # not a token
    ("X-Lf", "one\n two"), ("X-Cr", "a\rb"), ("X-Nul", "a\x00b"),  # control characters
    ("X-Del", "a\x7fb"), ("X-Esc", "\x1b[31m"),
    ("Content-Length", "2x"), ("Content-Length", "-2"), ("Content-Length", "+2"),
    ("Content-Length", "2, 2"), ("Content-Length", "\xb2"), ("Content-Length", ""),
])
def test_unpassable_response_headers(header):
    with pytest.raises(BadResponse):
        response_headers(agent_headers(("X-Before", "1"), header))


def test_a_second_content_length_is_unpassable():
    with pytest.raises(BadResponse, match="twice"):
        response_headers(agent_headers(("Content-Length", "2"), ("Content-Length", "2")))


def test_every_passed_header_is_one_waitress_accepts():
    """Waitress's start_response refuses hop-by-hop names, CR/LF and a non-int length."""
    upstream = agent_headers(("Content-Length", "5  "), ("X-Tab", "a\tb"), ("Trailers", "x"),
                             ("Connection", "close, X-Named"), ("X-Named", "1"))
    for name, value in response_headers(upstream):
        assert name.lower() not in waitress.task.hop_by_hop
        assert not {"\r", "\n"} & set(name + value)
        if name.lower() == "content-length":
            int(value)


class ClosableResponse:
    def __init__(self, status: int, headers: urllib3.HTTPHeaderDict) -> None:
        self.status, self.headers = status, headers
        self.closed = self.released = False

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        self.released = True


@pytest.mark.parametrize("status, headers", [
    (101, agent_headers(("Upgrade", "x"))), (200, agent_headers(("X(Bad)", "1")))])
def test_an_unpassable_response_is_closed_not_reused(status, headers):
    response = ClosableResponse(status, headers)
    with pytest.raises(BadResponse) as caught:
        relayable(response)
    assert isinstance(caught.value, AgentFailed) and not caught.value.timeout
    assert response.closed and response.released


def test_a_passable_response_is_left_open():
    response = ClosableResponse(204, agent_headers(("ETag", '"v1"')))
    assert relayable(response) == [("ETag", '"v1"')]
    assert not (response.closed or response.released)


@pytest.mark.parametrize("chunks, kept, truncated", [
    ([], b"", False), ([b"ab", b"cd"], b"abcd", False), ([b"abcd", b"e"], b"abcd", True),
    ([b"abcde"], b"abcd", True), ([b"a", b"bcd"], b"abcd", False),
])
def test_capture_keeps_the_limit_and_flags_only_more(chunks, kept, truncated):
    capture = Capture(4)
    for chunk in chunks:
        capture.add(chunk)
    assert (bytes(capture.data), capture.truncated) == (kept, truncated)


CONNECT, READ = 3.0, 300.0
LEASE = CONNECT + READ + 5  # as replay.journal_from sets it


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeJournal:
    """Keeps one lease deadline, as ``Journal.renew`` pushes it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.deadline = clock.now + LEASE   # taken at admission
        self.renewals = 0
        self.completed: dict = {}

    def renew(self, request_id: str, *, lease: int = 1) -> None:
        self.renewals += 1
        self.deadline = self.clock.now + LEASE

    def live(self, request_id, **fields) -> FakeLive:
        self.live_capture = FakeLive()
        return self.live_capture

    def complete(self, request_id: str, **fields) -> None:
        assert not self.completed, "completed twice"
        self.completed = fields

    def submit(self, answer: Answer) -> None:  # NOTE: as Completions, but at once
        fields = dataclasses.asdict(answer)
        self.complete(fields.pop("request_id"), **fields)


class FakeResponse:
    """An upstream response whose chunks arrive after the given silences."""

    length_remaining = None  # NOTE: as for a chunked body

    status = 200
    headers = urllib3.HTTPHeaderDict({"Content-Type": "text/event-stream"})

    def __init__(self, clock: FakeClock, journal: FakeJournal, gaps: list[float], *,
                 breaks: bool = False) -> None:
        self.clock, self.journal, self.gaps, self.breaks = clock, journal, iter(gaps), breaks
        self.closed = False

    def read1(self, amount: int) -> bytes:
        gap = next(self.gaps, None)
        if gap is None:
            if self.breaks:
                raise BrokenResponse("connection reset", timeout=False)
            return b""
        self.clock.now += gap
        assert self.clock.now < self.journal.deadline, "the lease expired mid-stream"
        return b"data: x\n\n"

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        pass


def relay(gaps: list[float], *, headers_after: float) -> tuple[FakeJournal, Iterator[bytes]]:
    clock = FakeClock()
    journal = FakeJournal(clock)
    arrived = clock.now
    clock.now += headers_after
    assert clock.now < journal.deadline
    stream = Relay(FakeResponse(clock, journal, gaps), journal=journal,  # type: ignore[arg-type]
                   completions=journal, request_id="req-1",
                   headers=[("Content-Type", "text/event-stream")], capture_limit=1024,
                   on_failure=lambda note: None, arrived=arrived,
                   lease=FIRST_LEASE, clock=clock)
    return journal, stream


@pytest.mark.parametrize("gaps", [
    [READ - 0.01] * 5,                                  # every chunk after a long silence
    [0.5] * 300 + [READ - 0.01, 1.9, READ - 0.01],      # a burst, then silences
    [LEASE / 2 - 0.01, READ - 0.01, READ - 0.01],       # just under the old half-lease throttle
])
@pytest.mark.parametrize("headers_after", [0.01, CONNECT + READ - 0.01])
def test_a_stream_never_outlives_its_lease_between_chunks(gaps, headers_after):
    journal, stream = relay(gaps, headers_after=headers_after)
    assert len(list(stream)) == len(gaps)
    assert journal.completed["status"] == 200 and journal.completed["error"] == ""


def test_renewal_is_throttled_to_one_redis_call_per_two_seconds():
    journal, stream = relay([0.01] * 1000, headers_after=0.01)   # 10 s of fast tokens
    list(stream)
    assert 4 <= journal.renewals <= 5
    assert journal.completed["latency"] == pytest.approx(0.01)


class KeepAliveAgent:
    """Answers on kept-alive connections; ``drop`` decides per request (the count of
    requests on its connection, from 1) whether to close instead of answering."""

    def __init__(self, drop: Callable[[int], bool],
                 answer: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") -> None:
        self.drop = drop
        self.answer = answer
        self.received = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.route = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            for count in range(1, 100):
                line = reader.readline()
                while line not in (b"\r\n", b""):
                    line = reader.readline()
                if not line:
                    return                    # the client closed the connection
                self.received += 1
                if self.drop(count):
                    return
                conn.sendall(self.answer)


@pytest.fixture
def upstream() -> Upstream:
    return Upstream(connect_timeout=2, read_timeout=5)


@pytest.fixture
def agent() -> Iterator[Callable[..., KeepAliveAgent]]:
    started: list[KeepAliveAgent] = []

    def start(drop: Callable[[int], bool], **kwargs: bytes) -> KeepAliveAgent:
        started.append(KeepAliveAgent(drop, **kwargs))
        return started[-1]

    yield start
    for each in started:
        each.sock.close()


def get(upstream: Upstream, route: str, *, resend: bool) -> bytes:
    response = upstream.send(route, "GET", "/", [], b"", resend=resend)
    body = b"".join(iter(lambda: response.read1(1024), b""))
    response.release_conn()
    return body


def test_a_kept_alive_connection_closed_by_the_agent_is_resent_once(upstream, agent):
    server = agent(lambda count: count == 2)  # closes the connection as it is reused
    assert get(upstream, server.route, resend=True) == b"ok"
    assert get(upstream, server.route, resend=True) == b"ok"
    assert server.received == 3


def test_a_stale_connection_is_not_resent_unless_allowed(upstream, agent):
    server = agent(lambda count: count == 2)
    get(upstream, server.route, resend=False)
    with pytest.raises(StaleConnection):
        get(upstream, server.route, resend=False)
    assert server.received == 2


def test_a_new_connection_closed_unanswered_is_a_failure_not_resent(upstream, agent):
    server = agent(lambda count: True)
    with pytest.raises(AgentFailed) as caught:
        get(upstream, server.route, resend=True)
    assert not isinstance(caught.value, StaleConnection)
    assert server.received == 1


def test_interim_answers_are_skipped_and_the_connection_stays_sound(upstream, agent):
    server = agent(lambda count: False, answer=(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    for _ in range(3):                        # on one kept-alive connection
        response = upstream.send(server.route, "GET", "/", [], b"")
        assert response.status == 200 and response.read1(1024) == b"ok"
        assert "link" not in response.headers
        response.release_conn()
    assert server.received == 3


def test_a_final_101_reaches_the_caller_to_be_refused(upstream, agent):
    server = agent(lambda count: False, answer=(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n"))
    response = upstream.send(server.route, "GET", "/", [], b"")
    assert response.status == 101
    with pytest.raises(BadResponse):
        relayable(response)


@pytest.mark.parametrize("method, head", [
    ("GET", b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ("GET", b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ("HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
])
def test_a_bodiless_answer_reads_no_body_whatever_its_framing(upstream, agent, method, head):
    server = agent(lambda count: False, answer=head)
    for _ in range(2):                        # no chunk awaited; the connection is reused
        response = upstream.send(server.route, method, "/", [], b"")
        assert response.read1(1024) == b""
        response.release_conn()
    assert server.received == 2


def test_response_cookies_stay_on_the_origin_that_set_them():
    upstream = urllib3.HTTPHeaderDict()
    upstream.add("Set-Cookie", "a=1; Domain=localhost; Path=/; HttpOnly")
    upstream.add("Set-Cookie", "b=2;domain = .other.localhost")
    upstream.add("Set-Cookie", "c=3; Path=/domain=x")
    assert response_headers(upstream) == [("Set-Cookie", "a=1; Path=/; HttpOnly"),
                                          ("Set-Cookie", "b=2"),
                                          ("Set-Cookie", "c=3; Path=/domain=x")]


class GatedResponse:
    """An upstream response whose chunks after the first wait for ``gate``."""

    status = 200
    length_remaining = None

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.gate = threading.Event()
        self.released = False

    def read1(self, amount: int) -> bytes:
        if len(self.chunks) < 3:
            assert self.gate.wait(5)
        return self.chunks.pop(0) if self.chunks else b""

    def release_conn(self) -> None:
        self.released = True

    def close(self) -> None:
        pass


def test_a_client_leaving_early_hands_the_rest_to_a_background_read():
    clock = FakeClock()
    journal = FakeJournal(clock)
    response = GatedResponse([b"a", b"b", b"c", b"d"])
    ended = threading.Event()
    stream = Relay(response, journal=journal,  # type: ignore[arg-type]
                   completions=journal, request_id="req-1", headers=[],
                   capture_limit=1024, on_failure=lambda note: None, arrived=clock.now,
                   lease=FIRST_LEASE, on_end=ended.set, clock=clock)
    assert next(stream) == b"a"
    stream.close()  # NOTE: the client went; the agent is still answering
    assert not ended.wait(0.2) and not journal.completed  # NOTE: its in-flight slot is held
    response.gate.set()
    assert ended.wait(5)
    assert journal.completed["body"] == b"abcd" and journal.completed["truncated"] is False
    assert "client disconnected" in journal.completed["error"] and response.released
    assert [kind for kind, *_ in journal.live_capture.published] == ["add"] * 4 + ["end"]


def parsed(head: bytes, method: str = "GET") -> http.client.HTTPResponse:
    """Return the agent's response head as the proxy parses it (upstream._FinalResponse)."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(head)
        response = upstream_module._FinalResponse(ours, method=method)
        response.begin()
        return response


def test_the_header_block_is_parsed_as_http_fields():
    response = parsed(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\n"
                      b"Set-Cookie: b=2\r\nContent-Length: 12 \r\n\r\n")
    assert response.status == 200 and response.version == 11 and response.length == 12
    assert response.msg.get_all("set-cookie") == ["a=1", "b=2"]
    assert response.msg.items()[0] == ("Content-Type", "text/plain")
    assert not response.will_close and not response.chunked


@pytest.mark.parametrize("head, length, chunked, closes", [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", None, True, False),
    (b"HTTP/1.1 200 OK\r\n\r\n", None, False, True),                  # up to the close
    (b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", 3, False, True),
    (b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", 0, False, False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", None, False, True),
])
def test_the_body_is_framed_as_rfc_9112_says(head, length, chunked, closes):
    response = parsed(head)
    assert (response.length, bool(response.chunked), response.will_close) == (
        length, chunked, closes)


def test_a_folded_header_keeps_its_line_break_and_is_refused():
    response = parsed(b"HTTP/1.1 200 OK\r\nX-Long: a\r\n b\r\nContent-Length: 0\r\n\r\n")
    assert response.msg.get("x-long") == "a\r\n b"
    with pytest.raises(BadResponse, match="control character"):
        response_headers(urllib3.HTTPHeaderDict(response.msg.items()))


def test_a_header_line_without_a_colon_is_a_bad_response():
    with pytest.raises(BadResponse, match="no colon"):
        parsed(b"HTTP/1.1 200 OK\r\nnot a header\r\n\r\n")


def test_a_request_goes_out_as_one_head_with_host_and_length():
    head = upstream_module._request_head(
        "POST", "/a?b=1", "10.0.0.2:8000", [("X-One", "1"), ("Accept", "*/*")], b"body")
    assert head == (b"POST /a?b=1 HTTP/1.1\r\nHost: 10.0.0.2:8000\r\nX-One: 1\r\n"
                    b"Accept: */*\r\nContent-Length: 4\r\n\r\n")
    assert b"Content-Length" not in upstream_module._request_head("GET", "/", "h:1", [], b"")
    assert b"Content-Length: 0" in upstream_module._request_head("PUT", "/", "h:1", [], b"")


@pytest.mark.parametrize("target, headers", [
    ("/a b", []), ("/a\r\nX: 1", []),                  # APPSEC: no request splitting
    ("/", [("X-Bad", "a\r\nX-Injected: 1")]), ("/", [("Bad Name", "1")]),
    ("/", [("X-Wide", "\u20ac")]),                      # not latin-1
])
def test_a_request_that_http_cannot_carry_is_refused(target, headers):
    with pytest.raises(ValueError):
        upstream_module._request_head("GET", target, "h:1", headers, b"")


def test_idle_connections_are_kept_per_route_and_the_oldest_route_dropped(monkeypatch):
    monkeypatch.setattr(upstream_module._Pools, "MAX_ROUTES", 2)
    pools = upstream_module._Pools(size=1)
    pairs = [socket.socketpair() for _ in range(4)]
    try:
        pools.give("a:1", pairs[0][0])
        pools.give("a:1", pairs[1][0])          # NOTE: over size: closed
        pools.give("b:1", pairs[2][0])
        pools.give("c:1", pairs[3][0])          # NOTE: a third route: a's are closed
        assert pairs[1][0].fileno() == -1 and pairs[0][0].fileno() == -1
        assert pools.take("a:1") is None and pools.take("b:1") is pairs[2][0]
        pairs[3][1].close()                     # NOTE: the agent closed it while idle
        assert pools.take("c:1") is None and pairs[3][0].fileno() == -1
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()
