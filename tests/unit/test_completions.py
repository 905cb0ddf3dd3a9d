"""Completions recorded off the request thread: batches, the bound, Redis away, shutdown."""

import threading

import pytest

from agentainer.errors import Unavailable
from agentainer.journal import completions as module
from agentainer.journal.completions import Completions
from agentainer.journal.journal import Answer, Completion
from agentainer.journal.live import Published


class GatedJournal:
    """write() waits for its gate, and fails while ``failures`` is positive."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.batches: list[list[str]] = []
        self.failures = 0
        self.entered = threading.Event()

    def write(self, items: list[Answer | Published]) -> list[Completion]:
        self.entered.set()
        assert self.gate.wait(10)
        if self.failures:
            self.failures -= 1
            raise Unavailable("Redis is not reachable")
        self.batches.append([item.request_id if isinstance(item, Answer) else item.key
                             for item in items])
        return [Completion.COMPLETED] * sum(isinstance(item, Answer) for item in items)


def answer(index: int, body: bytes = b"ok") -> Answer:
    return Answer(f"req-{index}", 1, 200, [], body, False)


def test_answers_that_pile_up_during_a_round_trip_go_in_one_batch():
    journal = GatedJournal()
    journal.gate.clear()
    writer = Completions(journal)  # type: ignore[arg-type]
    writer.submit(answer(0))
    assert journal.entered.wait(5)  # NOTE: the first batch is on its way, held at the gate
    for index in range(1, 51):
        writer.submit(answer(index))  # NOTE: returns at once: nothing waits for Redis
    journal.gate.set()
    assert writer.flush(5)
    assert journal.batches == [["req-0"], [f"req-{i}" for i in range(1, 51)]]
    writer.stop()


def test_a_batch_carries_at_most_batch_answers(monkeypatch):
    monkeypatch.setattr(module, "BATCH", 4)
    journal = GatedJournal()
    journal.gate.clear()
    writer = Completions(journal)  # type: ignore[arg-type]
    for index in range(9):
        writer.submit(answer(index))
    journal.gate.set()
    assert writer.flush(5)
    sizes = [len(batch) for batch in journal.batches]
    assert max(sizes) == 4 and sum(sizes) == 9
    writer.stop()


@pytest.mark.parametrize("bound", [{"max_pending": 3}, {"max_bytes": 10}])
def test_submit_blocks_at_the_bound_until_the_writer_catches_up(bound):
    journal = GatedJournal()
    journal.gate.clear()
    writer = Completions(journal, **bound)  # type: ignore[arg-type]
    for index in range(3):
        writer.submit(answer(index, b"abc"))
    blocked = threading.Thread(target=writer.submit, args=(answer(3, b"abc"),))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # NOTE: held while 3 answers (9 bytes) wait for Redis
    journal.gate.set()
    blocked.join(5)
    assert not blocked.is_alive() and writer.flush(5)
    assert sum(len(batch) for batch in journal.batches) == 4
    writer.stop()


def test_redis_away_is_retried_until_the_answers_land(monkeypatch):
    monkeypatch.setattr(module, "RETRY_BASE", 0.01)
    journal = GatedJournal()
    journal.failures = 3
    writer = Completions(journal)  # type: ignore[arg-type]
    writer.submit(answer(0))
    assert writer.flush(5)
    assert journal.batches == [["req-0"]] and journal.failures == 0
    writer.stop()


def test_stop_writes_what_is_pending_first():
    journal = GatedJournal()
    journal.gate.clear()
    writer = Completions(journal)  # type: ignore[arg-type]
    for index in range(5):
        writer.submit(answer(index))
    threading.Timer(0.2, journal.gate.set).start()
    writer.stop(timeout=5)
    assert sum(len(batch) for batch in journal.batches) == 5


def test_stop_gives_up_after_its_timeout_and_leaves_the_rest_to_the_leases(caplog):
    journal = GatedJournal()
    journal.gate.clear()
    writer = Completions(journal)  # type: ignore[arg-type]
    writer.submit(answer(0))
    writer.stop(timeout=0.2)
    assert "will be redelivered" in caplog.text
    journal.gate.set()


def test_a_streamed_response_is_published_in_order_ahead_of_its_answer():
    journal = GatedJournal()
    journal.gate.clear()
    writer = Completions(journal)  # type: ignore[arg-type]
    writer.submit(answer(0))
    assert journal.entered.wait(5)
    writer.submit(Published("stream:req-1", [{"k": "start"}, {"k": "data", "d": b"ab"}]))
    writer.submit(Published("stream:req-1", [{"k": "end"}]))
    writer.submit(answer(1))
    journal.gate.set()
    assert writer.flush(5)
    assert journal.batches[1] == ["stream:req-1", "stream:req-1", "req-1"]
    writer.stop()
