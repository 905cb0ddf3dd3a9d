"""The live capture: a response published to Redis as its deliverer reads it.

While a journaled response streams (through the proxy's relay or replay's drain), it is
appended to the request's ``respstream:{rid}`` STREAM
(:func:`agentainer.keys.response_stream_key`), so that :mod:`agentainer.journal.follow` can
follow it before the record holds the body.
Its entries, each a hash of byte strings:

    k=start  lease, status, headers (JSON pairs)   an attempt begins (one per lease)
    k=data   at (the chunk's body offset), d        the captured bytes, in order
    k=cut    at                                      capture_limit reached: no more data
    k=end    outcome (completed | failed), size      the attempt ended; size: bytes read

The data published is exactly what the record keeps (the first ``capture_limit`` bytes),
so followers switch from the stream to the record's ``resp_body`` at their offset once
the request completes; COMPLETE lets the stream expire 5 s later (a follower between two
reads still finds its end entry). The writes push the key's expiry to the lease's length
(at the first, then once a quarter of it has passed), so a dead deliverer's stream goes
with its lease. A redelivery appends a new ``start`` (another lease) to the same stream.

PERF: on the proxy's hot path, nothing is published for a response whose whole body came
in its first read (a Content-Length body read to its end, or a first chunk the end
follows): its followers wait for the record instead; replay (``eager``) publishes such a
body with its end, in one round trip. Each publish is one pipelined round trip (XADD, and
PEXPIRE when due). A Redis error turns the live capture off (the delivery itself goes
on; followers fall back on the record).
"""

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from agentainer.keys import response_stream_key

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    """Entries of a response's live capture, to append to its stream."""

    key: str                    # the stream's key (keys.response_stream_key)
    entries: list[dict]         # XADD field maps, in order
    ttl_ms: int | None = None   # push the stream's expiry to this, when due

    @property
    def size(self) -> int:
        """The bytes of body the entries carry."""
        return sum(len(entry.get("d", b"")) for entry in self.entries)

    def queue(self, pipe: redis.client.Pipeline) -> None:
        """Add the entries' XADDs (and the PEXPIRE, when due) to a pipeline."""
        for entry in self.entries:
            pipe.xadd(self.key, entry)
        if self.ttl_ms:
            pipe.pexpire(self.key, self.ttl_ms)


class LiveCapture:
    """Publishes one attempt's response to its live stream (see the module docstring).

    Args:
        eager: publish even a body that came whole in its first read (replay: a held
            caller follows every replayed response).
        sink: takes each publish (the proxy's: its process's writer, journal/completions.py,
            which sends it with others off the relaying thread); without one, each publish
            is a round trip of its own.
    """

    __slots__ = ("_redis", "_request_id", "_ttl_ms", "_lease", "_status", "_headers",
                 "_eager", "_state", "_size", "_held", "_expiry_due", "_sink")

    # NOTE: WAITING for the first chunk; HOLDING it (a body of unknown length: is there
    # more?); ON publishing; CUT at capture_limit (only the end is still published); OFF:
    # nothing more (a body whole in one read, or a Redis error)
    _WAITING, _HOLDING, _ON, _CUT, _OFF = range(5)

    def __init__(self, client: redis.Redis, request_id: str, *, lease: int, status: int,
                 headers: list[tuple[str, str]], ttl: float, eager: bool = False,
                 sink: Callable[[Published], None] | None = None) -> None:
        # PERF: nothing built until something is published (most answers never are)
        self._redis = client
        self._request_id = request_id
        self._ttl_ms = max(1000, int(ttl * 1000))
        self._lease, self._status, self._headers = lease, status, headers
        self._eager = eager
        self._state = self._WAITING
        self._size = 0  # the captured bytes published so far
        self._held: tuple[bytes, bool] = (b"", False)
        self._expiry_due = 0.0  # NOTE: time.monotonic() when the stream's expiry is due
        self._sink = sink

    def add(self, kept: bytes, *, cut: bool, left: int | None) -> None:
        """Publish a chunk's captured part (``kept``), and ``cut`` once capture_limit was
        reached; ``left``: the body's bytes still to come when its length is known
        (urllib3's ``length_remaining``: 0 when the body ends with this chunk), else None.

        PERF: the first chunk of a body of unknown length (chunked, or up to the close) is
        held until a second one comes: if the body ends with it, nothing is published
        (``eager``: it is published with the end, in one round trip, as is a body whole in
        its first read). A follower sees that first chunk late (with the second); one that
        resumes after it waits for it rather than miss it (journal/follow.py waits for a
        start).
        """
        state = self._state
        if state >= self._CUT:
            return
        entries: list[dict] = []
        if state == self._WAITING:
            if not self._eager and left == 0:
                self._state = self._OFF
                return
            if left is None or left == 0:
                self._held, self._state = (kept, cut), self._HOLDING
                return
            entries.append(self._start())
        elif state == self._HOLDING:
            entries.append(self._start())
            entries += self._data(*self._held)
        if self._state != self._CUT:
            self._state = self._ON
            entries += self._data(kept, cut)
        self._publish(entries)

    def _data(self, kept: bytes, cut: bool) -> list[dict]:
        entries: list[dict] = []
        if kept:
            entries.append({"k": "data", "at": self._size, "d": kept})
            self._size += len(kept)
        if cut:
            entries.append({"k": "cut", "at": self._size})
            self._state = self._CUT
        return entries

    def end(self, outcome: str, size: int) -> None:
        """Publish the attempt's end (``completed`` or ``failed``), just before the record
        is completed or retried; ``size``: the body's bytes read, kept or not.

        NOTE: an attempt that published nothing (no body, one read, or one chunk held)
        publishes no end either, unless ``eager``: nobody follows it but through the record.
        """
        state = self._state
        if state == self._OFF or (state in (self._WAITING, self._HOLDING)
                                  and not self._eager):
            return
        entries: list[dict] = [self._start()] if state in (self._WAITING, self._HOLDING) else []
        if state == self._HOLDING:
            entries += self._data(*self._held)
        entries.append({"k": "end", "outcome": outcome, "size": size})
        self._state = self._OFF
        self._publish(entries)

    def _start(self) -> dict:
        return {"k": "start", "lease": self._lease, "status": self._status,
                "headers": json.dumps(self._headers)}

    def _publish(self, entries: list[dict]) -> None:
        if not entries:
            return
        key = response_stream_key(self._request_id)
        now = time.monotonic()
        ttl_ms = None
        # PERF: the expiry is pushed a quarter of the way through, not per chunk
        if now >= self._expiry_due:
            ttl_ms, self._expiry_due = self._ttl_ms, now + self._ttl_ms / 4000
        published = Published(key, entries, ttl_ms)
        if self._sink is not None:
            self._sink(published)
            return
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                published.queue(pipe)
                pipe.execute()
        except redis.RedisError as ex:
            logger.warning("request %s: its live capture stops: %s", self._request_id, ex)
            self._state = self._OFF
