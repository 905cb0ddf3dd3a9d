import threading

from agentainer.errors import Unavailable
from agentainer.periodic import Periodic


def test_it_runs_first_when_asked_and_outlives_what_the_action_raises():
    calls: list[int] = []
    ran_twice = threading.Event()

    def action() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise Unavailable("Redis is unreachable")  # NOTE: logged, the next call goes ahead
        if len(calls) == 2:
            raise RuntimeError("a bug")
        ran_twice.set()

    periodic = Periodic("test", 0.01, action)
    periodic.start(now=True)
    assert calls[:1] == [0]  # the first call was made before start() returned
    assert ran_twice.wait(5)
    periodic.stop()
