"""Where a followed response starts: SSE event ends, live attempts, capture_limit."""

import pytest

from agentainer.errors import BeyondCapture, InvalidInput, NotFound
from agentainer.journal.follow import ResponseFollower, _Attempt, event_end
from agentainer.journal.live import LiveCapture
from agentainer.journal.sse import EventScanner, is_event_stream

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
        pass

    def execute(self) -> None:
        pass


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
    client, capture = live()
    capture.add(b"{}", cut=False, done=True)
    capture.end("completed", 2)
    assert client.sent == []


def test_a_streamed_body_is_published_up_to_its_cut_then_its_end():
    client, capture = live()
    capture.add(b"ab", cut=False, done=False)
    capture.add(b"cd", cut=True, done=False)
    capture.add(b"", cut=True, done=False)
    capture.end("completed", 9)
    assert client.sent == ["start", (0, b"ab"), (2, b"cd"), "cut", "end"]


def test_replay_publishes_even_a_small_or_empty_body():
    client, capture = live(eager=True)
    capture.add(b"{}", cut=False, done=True)
    capture.end("completed", 2)
    assert client.sent == ["start", (0, b"{}"), "end"]
    client, capture = live(eager=True)
    capture.end("failed", 0)
    assert client.sent == ["start", "end"]
