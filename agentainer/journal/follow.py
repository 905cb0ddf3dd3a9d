"""Following a request's response: live from its capture while it is delivered, then from
the record once it is stored.

:class:`ResponseFollower` serves ``GET /agents/{id}/requests/{rid}/response`` (resume) and
is the journal-layer piece the proxy's "hold" builds on: a request queued because its
agent is down is held on the caller's connection while the replay worker delivers it; the
caller's thread calls ``open(agent_id, rid, wait_until=...)``, which waits for the replayed
response to start (the drainer publishes every response it delivers, :mod:`.live`), then
answers the caller with :attr:`Followed.status` and :attr:`Followed.headers` and streams
:attr:`Followed.chunks` to it as they come; None from ``open`` means nothing started in
time (answer 202 and let the caller come back with its resume token).

Positions are byte offsets into the response body, or (``last_event_id``) just after the
Server-Sent Event with that id. The journal keeps only the first ``capture_limit`` bytes
of a body: a position past them raises :class:`BeyondCapture`, and chunks that stop at
them end with :attr:`Followed.truncated` set.
"""

import json
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import cast

import redis

from agentainer.agents.store import translate_redis_errors
from agentainer.errors import BeyondCapture, InvalidInput, NotFound, RangeNotSatisfiable
from agentainer.journal.journal import Journal
from agentainer.journal.sse import EventScanner, is_event_stream
from agentainer.keys import response_stream_key
from agentainer.statuses import RequestStatus

# NOTE: a follower looks at the record at least this often (seconds), so it notices a
# completion (the stream expires 5 s after it), a failure or a dead deliverer without an entry
POLL = 1.0
READ_COUNT = 500  # stream entries per read
END_POLL = 0.01  # NOTE: seconds between looks at a record whose live capture ended
TERMINAL = frozenset({RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED})


@dataclass
class Followed:
    """A response being followed from a position.

    ``status`` and ``headers`` are the agent's (the headers as passed on); both are None
    / empty when the request ended without a response (``request_status`` failed or
    cancelled; ``error`` says why). ``chunks`` yields the body from ``offset`` and ends
    when the response does; it may yield ``b""`` while nothing comes (at least every
    :data:`POLL` seconds), so a caller can check that its own client is still there.

    Set once ``chunks`` has ended: ``ended`` (``completed``; ``failed`` or ``cancelled``:
    the record ended without completing; ``redelivered``: the attempt being followed
    failed or was taken back after bytes of it were sent, and another attempt may answer
    differently: look at the record; ``gone``: the record was deleted), ``truncated``
    (the body stopped at capture_limit, short of the agent's), ``size`` (the agent's
    whole body, when known) and ``request_status`` (the record's, as last seen).
    """

    status: int | None
    headers: list[tuple[str, str]]
    request_status: RequestStatus
    offset: int
    live: bool                      # followed from the live capture (else the record)
    chunks: Iterator[bytes] = field(default_factory=lambda: iter(()))
    error: str = ""
    truncated: bool = False
    size: int | None = None
    ended: str = ""


@dataclass
class _Attempt:
    """What the live stream holds of one attempt (one lease) so far."""

    lease: int
    status: int
    headers: list[tuple[str, str]]
    data: list[tuple[int, bytes]] = field(default_factory=list)
    kept: int = 0                   # bytes of data
    cut: bool = False
    outcome: str = ""               # the end entry's: completed | failed ('' before)
    size: int | None = None

    def add(self, fields: dict[bytes, bytes]) -> None:
        kind = fields[b"k"]
        if kind == b"data":
            chunk, at = fields[b"d"], int(fields.get(b"at", self.kept))
            if at < self.kept:  # NOTE: published twice (a pipeline resent after a reconnect)
                chunk = chunk[self.kept - at:]
            if chunk:
                self.data.append((self.kept, chunk))
                self.kept += len(chunk)
        elif kind == b"cut":
            self.cut = True
        elif kind == b"end":
            self.outcome = fields[b"outcome"].decode()
            self.size = int(fields[b"size"])

    def since(self, position: int) -> bytes:
        """Return the data from ``position`` on."""
        return b"".join(chunk[max(0, position - at):] for at, chunk in self.data
                        if at + len(chunk) > position)


def _start(fields: dict[bytes, bytes]) -> _Attempt:
    return _Attempt(int(fields[b"lease"]), int(fields[b"status"]),
                    [(name, value) for name, value in json.loads(fields[b"headers"])])


def event_end(body: bytes, event_id: str, headers: list[tuple[str, str]]) -> int | None:
    """Return the offset just past the event with ``event_id`` in ``body``, or None.

    Raises:
        InvalidInput: the response is not an event stream (``not_event_stream``).
    """
    if not is_event_stream(headers):
        raise InvalidInput("Last-Event-ID resumes an event stream (text/event-stream); "
                           "this response is not one: use Range: bytes=N-",
                           code="not_event_stream")
    return EventScanner(event_id).feed(body)


class ResponseFollower:
    """Opens a request's response at a position (see the module docstring).

    ``wait_until`` and ``clock`` are ``time.monotonic()`` seconds.
    """

    def __init__(self, client: redis.Redis, journal: Journal, *, poll: float = POLL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = client
        self._journal = journal
        self._poll = poll
        self._clock = clock

    @translate_redis_errors
    def open(self, agent_id: str, request_id: str, *, offset: int = 0,
             last_event_id: str | None = None, wait_until: float | None = None
             ) -> Followed | None:
        """Wait for the response to start (or the record to end) and return it from
        ``offset`` (or after the event ``last_event_id``); None when ``wait_until``
        (monotonic; None: wait as long as the request lives) passes first.

        A request in flight is followed live once the attempt holding its current lease
        has published data at the position (its status and headers are then the ones
        that attempt answered with); one that ended is read from its record. A failed
        attempt that sent nothing at the position is not followed: the next one is
        waited for. A response whose whole body came in one read is not published by the
        proxy: it is read from the record once completed; nor is the first chunk of a body
        of unknown length until a second one comes (:meth:`.live.LiveCapture.add`).

        Raises:
            InvalidInput: ``last_event_id`` for a response that is not an event stream.
            NotFound: no such request for this agent (``request_not_found``), or no event
                with ``last_event_id`` in the captured body (``event_not_found``).
            BeyondCapture: the position is past the bytes the journal kept.
            RangeNotSatisfiable: ``offset`` is past the end of a completed body.
        """
        self._journal.get(agent_id, request_id, with_body=False)  # NOTE: whose is it
        key = response_stream_key(request_id)
        last_id, attempt = "0-0", None
        block: int | None = None  # NOTE: the first read takes what is there already
        while True:
            progress = self._journal.progress(request_id)
            if progress is None:
                raise NotFound(f"request {request_id!r} not found for agent {agent_id}",
                               code="request_not_found")
            status, lease = progress
            if status in TERMINAL:
                return self._stored(agent_id, request_id, offset, last_event_id)
            for entry_id, fields in self._read(key, last_id, block):
                last_id = entry_id
                if fields[b"k"] == b"start":
                    attempt = _start(fields)
                elif attempt is not None:
                    attempt.add(fields)
            if (attempt is not None and attempt.lease == lease
                    and attempt.outcome != RequestStatus.FAILED.value):
                position = self._position(request_id, attempt, offset, last_event_id)
                if position is not None:
                    followed = Followed(attempt.status, attempt.headers, status, position,
                                        live=True)
                    followed.chunks = self._follow(followed, agent_id, request_id, key,
                                                   last_id, attempt)
                    return followed
            left = None if wait_until is None else wait_until - self._clock()
            if left is not None and left <= 0:
                return None
            wait = self._poll if left is None else min(self._poll, left)
            if attempt is not None and attempt.outcome:
                # NOTE: its end was read: the record is completing; nothing more will come
                wait = min(wait, END_POLL)
            block = int(1000 * wait) or 1

    def _read(self, key: str, last_id: str, block: int | None
              ) -> list[tuple[str, dict[bytes, bytes]]]:
        """Return the entries after ``last_id``, every one there is (waiting up to
        ``block`` ms for the first)."""
        read: list[tuple[str, dict[bytes, bytes]]] = []
        while True:
            reply = cast(list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None,
                         self._redis.xread({key: last_id}, count=READ_COUNT, block=block))
            entries = [(entry_id.decode(), fields) for _, batch in reply or ()
                       for entry_id, fields in batch]
            read += entries
            if len(entries) < READ_COUNT:
                return read
            last_id, block = entries[-1][0], None

    @staticmethod
    def _position(request_id: str, attempt: _Attempt, offset: int,
                  last_event_id: str | None) -> int | None:
        """Return where a live attempt is followed from, once it has data there (None:
        not yet; the caller waits for more)."""
        if last_event_id is not None:
            end = event_end(attempt.since(0), last_event_id, attempt.headers)
            if end is not None:
                return end
            if attempt.cut:
                raise BeyondCapture(request_id, attempt.kept)
            # NOTE: a byte is published before it is relayed (a first chunk held back is
            # published with the start), so an event the caller got is in the stream
            raise NotFound(f"no event with id {last_event_id!r} in the response to "
                           f"{request_id} (so far)", code="event_not_found")
        if attempt.kept > offset:
            return offset
        if attempt.cut:
            raise BeyondCapture(request_id, attempt.kept)
        return None  # NOTE: an attempt that completed short of offset: the record says

    def _follow(self, followed: Followed, agent_id: str, request_id: str, key: str,
                last_id: str, attempt: _Attempt) -> Generator[bytes, None, None]:
        """Yield the live attempt's data from ``followed.offset``, then what comes."""
        position = followed.offset
        first = attempt.since(position)
        position += len(first)
        yield first
        polled = self._clock()
        while not attempt.outcome:
            if self._clock() - polled >= self._poll:
                polled = self._clock()
                progress = self._journal.progress(request_id)
                if progress is None:
                    followed.ended = "gone"
                    return
                status, lease = progress
                followed.request_status = status
                if lease != attempt.lease or status is not RequestStatus.IN_FLIGHT:
                    if status is RequestStatus.COMPLETED and lease == attempt.lease:
                        # NOTE: its end entry was missed (the stream expired after
                        # completion): the record holds the rest
                        yield self._rest(followed, agent_id, request_id, position)
                    else:
                        _ended_early(followed)
                    return
            entries = self._read(key, last_id, int(self._poll * 1000))
            if not entries:
                yield b""  # NOTE: a tick: the caller may check its client meanwhile
                continue
            for entry_id, fields in entries:
                last_id = entry_id
                if fields[b"k"] == b"start":  # NOTE: another lease: a redelivery
                    _ended_early(followed)
                    return
                attempt.add(fields)
                if attempt.kept > position:
                    chunk = attempt.since(position)
                    position = attempt.kept
                    yield chunk
                if attempt.outcome:
                    break
        followed.size, followed.truncated = attempt.size, attempt.cut
        if attempt.outcome == RequestStatus.COMPLETED.value:
            followed.ended = followed.request_status = RequestStatus.COMPLETED
        else:
            _ended_early(followed)

    def _rest(self, followed: Followed, agent_id: str, request_id: str,
              position: int) -> bytes:
        """Return a completed record's body from ``position``, finishing ``followed``."""
        record = self._journal.get(agent_id, request_id)
        body: bytes = record["resp_body"] or b""
        followed.truncated = bool(record.get("resp_truncated"))
        followed.size = None if followed.truncated else len(body)
        followed.ended = followed.request_status = RequestStatus.COMPLETED
        return body[position:]

    def _stored(self, agent_id: str, request_id: str, offset: int,
                last_event_id: str | None) -> Followed:
        """Return the response a finished record holds, from the position."""
        record = self._journal.get(agent_id, request_id)
        status = RequestStatus(record["status"])
        if status is not RequestStatus.COMPLETED:
            return Followed(None, [], status, 0, live=False, error=record.get("error", ""),
                            ended=status.value)
        body: bytes = record["resp_body"] or b""
        truncated = bool(record.get("resp_truncated"))
        if last_event_id is not None:
            end = event_end(body, last_event_id, record["resp_headers"])
            if end is None and truncated:
                raise BeyondCapture(request_id, len(body))
            if end is None:
                raise NotFound(f"no event with id {last_event_id!r} in the response to "
                               f"{request_id}", code="event_not_found")
            offset = end
        elif truncated and offset >= len(body) and offset:
            raise BeyondCapture(request_id, len(body))
        elif offset > len(body):
            raise RangeNotSatisfiable(f"the response to {request_id} has {len(body)} bytes; "
                                      f"offset {offset} is past its end")
        return Followed(record["resp_status"],
                        [(name, value) for name, value in record["resp_headers"]], status,
                        offset, live=False, chunks=iter((body[offset:],)),
                        truncated=truncated, size=None if truncated else len(body),
                        ended=status.value)


def _ended_early(followed: Followed) -> None:
    """End ``followed`` whose attempt failed or was taken back after bytes were sent."""
    status = followed.request_status
    followed.ended = (status.value if status in (RequestStatus.FAILED, RequestStatus.CANCELLED)
                      else "redelivered")
