"""The proxy's header rules, lease renewal on streams, and stale kept-alive connections."""

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
import urllib3

from agentainer.journal import FIRST_LEASE
from agentainer.proxy import (
    AgentFailed, Relay, StaleConnection, Upstream, forward_headers, replay_headers,
    response_headers, stored_headers,
)

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


def test_stored_headers_redact_secrets_and_replay_leaves_them_out():
    stored = stored_headers(CLIENT)
    assert dict(stored)["Authorization"] == dict(stored)["Cookie"] == "[redacted]"
    assert "host" not in names(stored) and "x-agentainer-replay" not in names(stored)
    assert "x-secret-hop" not in names(stored)
    assert replay_headers(stored) == [("Accept", "text/event-stream"), ("X-Custom", "kept")]


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


CONNECT, READ = 3.0, 300.0
LEASE = CONNECT + READ + 5  # as replay.journal_from sets it


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeJournal:
    """Keeps one lease deadline, as ``Journal.renew`` pushes it."""

    lease_seconds = LEASE

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.deadline = clock.now + LEASE   # taken at admission
        self.renewals = 0
        self.completed: dict = {}

    def renew(self, request_id: str, *, lease: int = 1) -> None:
        self.renewals += 1
        self.deadline = self.clock.now + LEASE

    def complete(self, request_id: str, **fields) -> None:
        self.completed = fields


class FakeResponse:
    """An upstream response whose chunks arrive after the given silences."""

    status = 200
    headers = urllib3.HTTPHeaderDict({"Content-Type": "text/event-stream"})

    def __init__(self, clock: FakeClock, journal: FakeJournal, gaps: list[float]) -> None:
        self.clock, self.journal, self.gaps = clock, journal, iter(gaps)

    def read1(self, amount: int, decode_content: bool) -> bytes:
        gap = next(self.gaps, None)
        if gap is None:
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
    stream = Relay(FakeResponse(clock, journal, gaps), journal=journal, request_id="req-1",
                   headers=[("Content-Type", "text/event-stream")], capture_limit=1024, on_failure=lambda note: None, arrived=arrived,
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

    def __init__(self, drop: Callable[[int], bool]) -> None:
        self.drop = drop
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
                while reader.readline() not in (b"\r\n", b""):
                    pass
                self.received += 1
                if self.drop(count):
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.fixture
def upstream() -> Upstream:
    return Upstream(connect_timeout=2, read_timeout=5)


@pytest.fixture
def agent() -> Iterator[Callable[[Callable[[int], bool]], KeepAliveAgent]]:
    started: list[KeepAliveAgent] = []

    def start(drop: Callable[[int], bool]) -> KeepAliveAgent:
        started.append(KeepAliveAgent(drop))
        return started[-1]

    yield start
    for each in started:
        each.sock.close()


def get(upstream: Upstream, route: str, *, resend: bool) -> bytes:
    response = upstream.send(route, "GET", "/", [], b"", resend=resend)
    body = response.read()
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
