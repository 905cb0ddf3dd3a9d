"""Where a followed response starts: SSE event ends, live attempts, capture_limit."""

import pytest

from agentainer.errors import BeyondCapture, InvalidInput, NotFound
from agentainer.journal.follow import ResponseFollower, _Attempt, event_end
from agentainer.journal.live import LiveCapture
from agentainer.journal.sse import EventScanner, is_event_stream
from agentainer.statuses import RequestStatus

SSE = [("Content-Type", "text/event-stream; charset=utf-8")]
STREAM = b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n: comment\ndata: c\n\nid: 3\ndata: d\n\n"


@pytest.mark.parametrize("event_id, end", [("1", 15), ("2", 30), ("3", 64), ("4", None)])
def test_an_event_ends_at_its_blank_line(event_id, end):
    assert event_end(STREAM, event_id, SSE) == end


def test_events_are_found_across_chunks_and_line_ends():
    stream = b"id:7\r\ndata: x\r\n\r\nid: 8\rdata: y\r\rdata: z\n\n"
    for size in (1, 2, 3, 5, len(stream)):
        for wanted, end in (("7", 17), ("8", 32)):
            scanner = EventScanner(wanted)
            found = None
            for at in range(0, len(stream), size):
                found = scanner.feed(stream[at:at + size])
                if found is not None:
                    break
            assert found == end, (size, wanted)


def test_an_id_is_the_events_last_and_ignored_with_a_nul():
    assert event_end(b"id: 1\nid: 2\ndata: x\n\n", "1", SSE) is None
    assert event_end(b"id: 1\nid: 2\ndata: x\n\n", "2", SSE) == 21
    assert event_end(b"id: a\0b\ndata: x\n\n", "a\0b", SSE) is None
    assert event_end(b"id\ndata: x\n\n", "", SSE) == 12  # NOTE: an empty id


def test_last_event_id_needs_an_event_stream():
    assert is_event_stream(SSE) and not is_event_stream([("Content-Type", "text/plain")])
    with pytest.raises(InvalidInput) as caught:
        event_end(STREAM, "1", [("Content-Type", "application/json")])
    assert caught.value.code == "not_event_stream"


def attempt(*chunks: bytes, cut: bool = False, headers=SSE) -> _Attempt:
    live = _Attempt(lease=1, status=200, headers=headers)
    for chunk in chunks:
        live.add({b"k": b"data", b"d": chunk})
    if cut:
        live.add({b"k": b"cut"})
    return live


def test_an_attempt_gives_its_data_from_any_position():
    live = attempt(b"abc", b"def", b"g")
    assert [live.since(n) for n in (0, 2, 3, 6, 7)] == [b"abcdefg", b"cdefg", b"defg", b"g", b""]


def test_a_live_position_waits_for_data_there():
    position = ResponseFollower._position
    assert position("req-1", attempt(b"abc"), 2, None) == 2
    assert position("req-1", attempt(b"abc"), 3, None) is None   # NOTE: not there yet
    assert position("req-1", attempt(STREAM[:20]), 0, "1") == 15
    with pytest.raises(BeyondCapture):
        position("req-1", attempt(b"abc", cut=True), 3, None)
    with pytest.raises(BeyondCapture):
        position("req-1", attempt(STREAM[:20], cut=True), 0, "2")
    with pytest.raises(NotFound) as caught:
        position("req-1", attempt(STREAM), 0, "9")
    assert caught.value.code == "event_not_found"


class Pipeline:
    def __init__(self, sent: list) -> None:
        self.sent = sent

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def xadd(self, key, entry) -> None:
        self.sent.append(entry["k"] if entry["k"] != "data" else (entry["at"], entry["d"]))

    def pexpire(self, key, ttl) -> None:
        self.sent.append("expire")

    def execute(self) -> None:
        self.sent.append("|")  # NOTE: one round trip ends here


class Redis:
    def __init__(self) -> None:
        self.sent: list = []

    def pipeline(self, transaction: bool) -> Pipeline:
        return Pipeline(self.sent)


def live(*, eager: bool = False) -> tuple[Redis, LiveCapture]:
    client = Redis()
    capture = LiveCapture(client, "req-1", lease=1, status=200,  # type: ignore[arg-type]
                          headers=SSE, ttl=10, eager=eager)
    return client, capture


def test_a_body_whole_in_its_first_read_is_not_published():
    for left in (0, None):  # NOTE: a Content-Length body read whole; one chunk, then the end
        client, capture = live()
        capture.add(b"{}", cut=False, left=left)
        capture.end("completed", 2)
        assert client.sent == []


def test_a_streamed_body_is_published_up_to_its_cut_then_its_end():
    client, capture = live()
    capture.add(b"ab", cut=False, left=None)
    assert client.sent == []  # NOTE: held: does more come?
    capture.add(b"cd", cut=True, left=None)
    capture.add(b"", cut=True, left=None)
    capture.end("completed", 9)
    # NOTE: the expiry is pushed with the first write only (then a quarter-lease later)
    assert client.sent == ["start", (0, b"ab"), (2, b"cd"), "cut", "expire", "|", "end", "|"]


def test_a_body_of_known_length_is_published_from_its_first_chunk():
    client, capture = live()
    capture.add(b"ab", cut=True, left=5)
    assert client.sent == ["start", (0, b"ab"), "cut", "expire", "|"]
    capture.add(b"cde", cut=True, left=0)
    capture.end("failed", 5)
    assert client.sent == ["start", (0, b"ab"), "cut", "expire", "|", "end", "|"]


def test_replay_publishes_even_a_small_or_empty_body_with_its_end_in_one_round_trip():
    for left in (0, None):
        client, capture = live(eager=True)
        capture.add(b"{}", cut=False, left=left)
        assert client.sent == []
        capture.end("completed", 2)
        assert client.sent == ["start", (0, b"{}"), "end", "expire", "|"]
    client, capture = live(eager=True)
    capture.end("failed", 0)
    assert client.sent == ["start", "end", "expire", "|"]


class Streams:
    """A Redis holding one live capture, read with XREAD; ``steps`` run, one per empty
    read, to change the world meanwhile (the clock moves a poll each read)."""

    def __init__(self, clock: list[float], *steps) -> None:
        self.entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        self.clock, self.steps = clock, list(steps)

    def publish(self, kind: str, **fields) -> None:
        entry = {b"k": kind.encode(), **{k.encode(): v if isinstance(v, bytes)
                                         else str(v).encode() for k, v in fields.items()}}
        self.entries.append((f"{len(self.entries) + 1}-0".encode(), entry))

    def start(self, lease: int, status: int = 200) -> None:
        self.publish("start", lease=lease, status=status, headers='[["Content-Type", "x/y"]]')

    def xread(self, streams: dict, count: int, block: int | None):
        [(key, last)] = streams.items()
        after = int(last.split("-")[0])
        new = self.entries[after:]
        self.clock[0] += 1.0
        if not new and self.steps:
            self.steps.pop(0)()
        return [(key.encode(), new)] if new else []


class Records:
    def __init__(self, status: str = "in_flight", lease: int = 1) -> None:
        self.status, self.lease, self.body = status, lease, b""

    def get(self, agent_id, request_id, *, with_body=True) -> dict:
        return {"status": self.status, "resp_status": 200, "resp_body": self.body,
                "resp_headers": [["Content-Type", "x/y"]], "resp_truncated": False}

    def progress(self, request_id):
        return RequestStatus(self.status), self.lease


def follower(streams: Streams, records: Records, clock: list[float]) -> ResponseFollower:
    return ResponseFollower(streams, records, poll=1.0,  # type: ignore[arg-type]
                            clock=lambda: clock[0])


def test_a_live_attempt_is_followed_to_its_end():
    clock = [0.0]
    records = Records()
    streams = Streams(clock, lambda: streams.publish("data", d=b"cd"),
                      lambda: streams.publish("end", outcome="completed", size=4))
    streams.start(1, status=201)
    streams.publish("data", d=b"ab")
    followed = follower(streams, records, clock).open("a", "req-1", offset=1)
    assert followed is not None and followed.live and followed.status == 201
    assert b"".join(followed.chunks) == b"bcd"
    assert (followed.ended, followed.size, followed.truncated) == ("completed", 4, False)


def test_a_failed_attempt_that_sent_nothing_gives_way_to_the_next():
    clock = [0.0]
    records = Records(lease=2)
    streams = Streams(clock, lambda: streams.publish("end", outcome="completed", size=3))
    streams.start(1, status=500)
    streams.publish("data", d=b"ab")
    streams.publish("end", outcome="failed", size=2)
    streams.start(2)
    streams.publish("data", d=b"xyz")
    followed = follower(streams, records, clock).open("a", "req-1")
    assert followed is not None and followed.status == 200
    assert b"".join(followed.chunks) == b"xyz" and followed.ended == "completed"


def test_a_redelivery_after_bytes_were_sent_ends_the_stream():
    clock = [0.0]
    records = Records()

    def redelivered() -> None:
        streams.publish("end", outcome="failed", size=2)
        records.status = "queued"

    streams = Streams(clock, redelivered)
    streams.start(1)
    streams.publish("data", d=b"ab")
    followed = follower(streams, records, clock).open("a", "req-1")
    assert followed is not None and b"".join(followed.chunks) == b"ab"
    assert followed.ended == "redelivered"


def test_a_dead_deliverer_is_noticed_by_polling_the_record():
    clock = [0.0]
    records = Records()
    streams = Streams(clock, lambda: None, lambda: setattr(records, "lease", 2))
    streams.start(1)
    streams.publish("data", d=b"ab")
    followed = follower(streams, records, clock).open("a", "req-1")
    assert followed is not None
    chunks = list(followed.chunks)
    assert b"".join(chunks) == b"ab" and followed.ended == "redelivered"
    assert b"" in chunks  # NOTE: the idle ticks, for the caller to check its client


def test_a_completion_whose_stream_is_gone_is_read_from_the_record():
    clock = [0.0]
    records = Records()

    def completed() -> None:
        streams.entries.clear()
        records.status, records.body = "completed", b"abcdef"

    streams = Streams(clock, completed)
    streams.start(1)
    streams.publish("data", d=b"ab")
    followed = follower(streams, records, clock).open("a", "req-1")
    assert followed is not None and b"".join(followed.chunks) == b"abcdef"
    assert followed.ended == "completed" and followed.size == 6


def test_nothing_started_in_time_is_none():
    clock = [0.0]
    streams = Streams(clock)
    assert follower(streams, Records(status="queued"), clock).open(
        "a", "req-1", wait_until=3.0) is None
