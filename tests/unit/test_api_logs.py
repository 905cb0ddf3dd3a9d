"""A followed log ends when its client goes, even while the container is silent."""

import threading

from agentainer.api.logs import FollowStream
from agentainer.api.proxy import Releasing


class SilentLog:
    """A Docker log stream that blocks until closed, as a silent container's does."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.closed = threading.Event()

    def __iter__(self):
        yield from self.chunks
        self.closed.wait()
        raise OSError("socket shut down")  # NOTE: what docker's stream raises once closed

    def close(self) -> None:
        self.closed.set()


def test_a_follow_on_a_silent_log_stops_when_its_client_is_gone():
    source, released, gone = SilentLog(b"hello\n"), [], threading.Event()
    stream = Releasing(FollowStream(source, gone.is_set, tick=0.01),
                       lambda: released.append(1))
    chunks = iter(stream)
    assert next(chunks) == b"hello\n"
    gone.set()
    assert list(chunks) == []
    stream.close()
    assert source.closed.is_set() and released == [1]


def test_a_follow_ends_when_its_log_does():
    released = []
    stream = Releasing(FollowStream(iter([b"a", b"b"]), lambda: False, tick=0.01),
                       lambda: released.append(1))
    assert list(stream) == [b"a", b"b"]
    stream.close()
    assert released == [1]
