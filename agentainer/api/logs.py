"""GET /agents/{id}/logs: a container's output, streamed; followed streams are capped."""

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator

import falcon

from agentainer import units
from agentainer.agents.service import AgentService
from agentainer.api.inflight import Slots
from agentainer.api.lifecycle import param, whole_number
from agentainer.api.proxy import Releasing
from agentainer.errors import TooManyFollows

logger = logging.getLogger(__name__)

# NOTE: how often a follow with nothing to send checks that its client is still there
TICK = 1.0
_END = object()


class FollowSlots(Slots):
    """The follows one server process streams at once (``follow_limit``), each holding a
    worker thread: ``logs?follow=true`` and live reads of responses (api/responses.py)."""

    def take(self) -> None:
        """Take a slot.

        Raises:
            TooManyFollows: none is free.
        """
        if not self.enter():
            raise TooManyFollows(self.limit)

    def release(self) -> None:
        self.leave()


class LogsResource:
    """Streams logs; a follow takes one of the process's :class:`FollowSlots`."""

    def __init__(self, agents: AgentService, follows: FollowSlots,
                 clock: Callable[[], float] = time.time) -> None:
        self._agents = agents
        self._follows = follows
        self._clock = clock

    def on_get(self, req: falcon.Request, resp: falcon.Response, agent_id: str) -> None:
        tail = param(req, "tail", whole_number)
        since = param(req, "since", lambda v: units.parse_since(v, self._clock()))
        follow = param(req, "follow", units.parse_bool) or False
        timestamps = param(req, "timestamps", units.parse_bool) or False
        # APPSEC: each follow holds a worker thread for as long as its client stays
        if follow:
            self._follows.take()
        try:
            stream = self._agents.logs(agent_id, follow=follow, tail=tail, since=since,
                                       timestamps=timestamps)
        except BaseException:
            if follow:
                self._follows.release()
            raise
        resp.content_type = falcon.MEDIA_TEXT
        # NOTE: falcon hands the iterator to waitress, which writes each chunk as it
        # comes and calls close() at the end or when the client goes away.
        if follow:
            gone = req.env.get("waitress.client_disconnected", lambda: False)
            resp.stream = Releasing(FollowStream(stream, gone), self._follows.release)
        else:
            resp.stream = stream


class FollowStream:
    """A followed log stream that ends when its client goes, even while the log is silent.

    A thread reads the Docker stream (which blocks until the container writes); the
    WSGI server's thread waits for its chunks at most :data:`TICK` at a time and, between
    them, asks the server whether the client went away (waitress notices a closed
    connection as it reads, see ``listener.LOOKAHEAD``). ``close()`` closes the Docker
    stream, which ends the reading thread.
    """

    def __init__(self, source: Iterator[bytes], client_gone: Callable[[], bool], *,
                 tick: float = TICK) -> None:
        self._source = source
        self._client_gone = client_gone
        self._tick = tick
        self._chunks: queue.Queue = queue.Queue(maxsize=64)
        self._closed = threading.Event()
        threading.Thread(target=self._pump, name="logs-follow", daemon=True).start()

    def _pump(self) -> None:
        try:
            for chunk in self._source:
                if not self._put(chunk):
                    return
        except Exception as ex:  # noqa: BLE001 - close() breaks the read on purpose
            if not self._closed.is_set():
                logger.info("logs follow ended: %r", ex)
        finally:
            self._put(_END)

    def _put(self, item: object) -> bool:
        """Queue ``item`` for the client, waiting while it is slow; False once closed."""
        while not self._closed.is_set():
            try:
                self._chunks.put(item, timeout=self._tick)
                return True
            except queue.Full:  # NOTE: back-pressure: Docker is read no faster than sent
                continue
        return False

    def __iter__(self) -> "FollowStream":
        return self

    def __next__(self) -> bytes:
        while True:
            try:
                chunk = self._chunks.get(timeout=self._tick)
            except queue.Empty:
                if self._client_gone():
                    raise StopIteration from None
                continue
            if chunk is _END:
                raise StopIteration
            return chunk

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        close = getattr(self._source, "close", None)
        if close is not None:
            close()
