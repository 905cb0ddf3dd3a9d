"""A request that arrives too slowly is cut off: headers by a deadline, a body by a rate."""

import threading
import time

import pytest

from agentainer.api import serving
from agentainer.api.serving import Deadlines

DEADLINES = Deadlines(header_timeout=10.0, body_min_rate=1000)


@pytest.mark.parametrize("elapsed, expired", [(9.9, False), (10.1, True)])
def test_headers_get_header_timeout(elapsed, expired):
    assert DEADLINES.expired(elapsed, headers_done=False, body_bytes=0) is expired


@pytest.mark.parametrize("elapsed, body_bytes, expired", [
    (19.9, 0, False),          # the body gets header_timeout of grace after the headers'
    (20.1, 0, True),
    (29.9, 10_000, False),     # and a second more per body_min_rate bytes received
    (30.1, 10_000, True),
])
def test_a_body_must_keep_up_body_min_rate(elapsed, body_bytes, expired):
    assert DEADLINES.expired(elapsed, headers_done=True, body_bytes=body_bytes) is expired


def test_the_thread_idle_the_shortest_time_takes_the_next_task():
    condition = serving._LastIdleFirst()
    woken: list[int] = []
    ready = threading.Semaphore(0)

    def wait(index: int) -> None:
        with condition:
            ready.release()
            condition.wait(5)
            woken.append(index)

    threads = []
    for index in range(3):  # NOTE: one after the other, so they wait in that order
        threads.append(threading.Thread(target=wait, args=(index,)))
        threads[-1].start()
        assert ready.acquire(timeout=5)
        with condition:  # NOTE: the thread is waiting once it has released the lock
            pass
    for _ in range(3):
        with condition:
            condition.notify()
        time.sleep(0.1)
    for thread in threads:
        thread.join(5)
    assert woken == [2, 1, 0]
