"""Completions recorded off the request thread: one writer per process, pipelined batches.

The proxy's request thread hands its answer to :class:`Completions` and is free: the
client has its response while the answer is on its way to Redis. One writer thread sends
what has piled up meanwhile as one pipelined round trip (:meth:`Journal.write`), so under
load each batch carries the answers of many requests, and a journaled request costs its
thread one synchronous round trip (admission). A streamed response's live capture
(live.py) goes the same way, chunk by chunk, in order and ahead of its answer: relaying a
chunk waits for no Redis round trip either. (A client that resumes after a chunk within
that round trip waits for the chunk to be published: journal/follow.py.)

The gap: until its answer lands, a request stays ``in_flight``, leased to this process.
Its lease covers the gap (the writer retries, backing off, while Redis is away); if the
process dies in it (kill -9), its leases are given back when its heartbeat lapses
(:meth:`Journal.reap`) and the request is delivered once more, from its queue, then
completed. So a request whose answer is lost so is redelivered once, never lost; its
client got the first answer. An answer that lands after its lease was swept still
completes the request unless it was leased again (the fence, journal.py).

Bounded: at most :data:`MAX_PENDING` answers or :data:`MAX_PENDING_BYTES` of bodies wait;
past that, :meth:`Completions.submit` blocks until the writer catches up (Redis slower
than the proxy slows the proxy, instead of growing its memory).
"""

import logging
import threading
import time
from collections import deque

from agentainer.backoff import backoff
from agentainer.errors import JournalFull, Unavailable
from agentainer.journal.journal import Answer, Completion, Journal
from agentainer.journal.live import Published

logger = logging.getLogger(__name__)

MAX_PENDING = 4096
MAX_PENDING_BYTES = 64 << 20
BATCH = 256          # answers per pipelined round trip, at most
RETRY_BASE, RETRY_CAP = 0.05, 2.0


class Completions:
    """Records answers to Redis on a writer thread of its own (see the module docstring).

    The thread starts with the first answer; :meth:`stop` writes what is pending first.
    """

    def __init__(self, journal: Journal, *, max_pending: int = MAX_PENDING,
                 max_bytes: int = MAX_PENDING_BYTES) -> None:
        self._journal = journal
        self._max_pending = max_pending
        self._max_bytes = max_bytes
        self._changed = threading.Condition()
        self._pending: deque[Answer | Published] = deque()
        self._bytes = 0
        self._writing = 0       # answers taken by the writer and not yet landed
        self._stopping = False
        self._thread: threading.Thread | None = None

    def submit(self, answer: Answer | Published) -> None:
        """Queue an answer (or live-capture entries) for the writer; block while the
        pending ones are at the bound."""
        size = _size(answer)
        with self._changed:
            while (self._pending or self._writing) and not self._stopping and (
                    len(self._pending) + self._writing >= self._max_pending
                    or self._bytes + size > self._max_bytes):
                self._changed.wait()
            self._pending.append(answer)
            self._bytes += size
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="completions",
                                                daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every answer submitted so far has landed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._pending or self._writing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is pending (for up to ``timeout`` seconds), then stop the writer.

        NOTE: answers still pending after that are left to their leases (redelivered).
        """
        if not self.flush(timeout):
            logger.warning("%d answer(s) not recorded at exit: their requests will be "
                           "redelivered", len(self._pending) + self._writing)
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._stopping:
                    self._changed.wait()
                if self._stopping:
                    return
                batch = [self._pending.popleft()
                         for _ in range(min(BATCH, len(self._pending)))]
                self._writing = len(batch)
            self._write(batch)
            with self._changed:
                self._writing = 0
                self._bytes -= sum(_size(item) for item in batch)
                self._changed.notify_all()

    def _write(self, batch: list[Answer | Published]) -> None:
        """Record a batch, retrying while Redis is away (the leases cover the wait)."""
        failures = 0
        while True:
            try:
                outcomes = self._journal.write(batch)
                break
            except (Unavailable, JournalFull) as ex:
                failures += 1
                if self._stopping:
                    return
                logger.warning("%d answer(s) not recorded yet (%s); retrying", len(batch),
                               ex.message)
                time.sleep(backoff(failures, base=RETRY_BASE, cap=RETRY_CAP))
            except Exception:  # noqa: BLE001 - a thread of its own: the rest must land
                logger.exception("%d answer(s) could not be recorded: their requests will "
                                 "be redelivered", len(batch))
                return
        answers = [item for item in batch if isinstance(item, Answer)]
        for answer, outcome in zip(answers, outcomes):
            if outcome is not Completion.COMPLETED:
                logger.info("request %s: answered after its lease was lost; not recorded "
                            "(%s)", answer.request_id, outcome)


def _size(item: Answer | Published) -> int:
    return len(item.body) if isinstance(item, Answer) else item.size
