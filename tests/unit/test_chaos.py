"""The chaos harness's pure parts: the seeded schedule and the tally of synthetic runs."""

import random

from bench.chaos.client import Outcome, Plan
from bench.chaos.killer import TARGETS, Kill, schedule
from bench.chaos.report import verdicts
from bench.chaos.tally import Delivery, percentile, tally


def test_the_plan_and_the_schedule_follow_the_seed():
    def make(seed: int):
        rng = random.Random(seed)
        return (Plan.make(100, rng=rng, stream_share=0.2, rate=10),
                [(k.target, k.planned) for k in schedule(2, 10.0, rng)])

    plan, kills = make(3)
    assert make(3) == (plan, kills) and make(4) != (plan, kills)
    assert len(plan.keyed) == 50 and len(plan.streamed) == 20
    assert sorted(t for t, _ in kills) == sorted(TARGETS * 2)
    moments = [at for _, at in kills]
    slot = 10.0 / (len(kills) + 1)
    assert moments == sorted(moments) and 0 < moments[0] and moments[-1] < 10.0
    assert min(b - a for a, b in zip(moments, moments[1:])) >= slot / 2 - 1e-9


def record(status: str, created: float, updated: float) -> dict:
    return {"status": status, "created_at": created * 1000, "updated_at": updated * 1000}


def kill(target: str, at: float) -> Kill:
    return Kill(target, planned=0.0, at=at, done=at + 0.01)


def test_a_crash_redelivery_is_bounded_and_timed():
    outcomes = [Outcome(0, "k0", False, how="answered", request_id="r0"),
                Outcome(1, "", True, how="queued", request_id="r1")]
    deliveries = [Delivery(10.0, "r0", False, "k0", 0), Delivery(10.5, "r1", False, "", 1),
                  Delivery(29.0, "r1", True, "", 1)]
    records = {"r0": record("completed", 9.9, 10.1), "r1": record("completed", 10.4, 29.1)}
    figures = tally(outcomes, deliveries, records, [kill("server:server-0", 11.0)])
    assert figures.acknowledged == figures.completed == 2 and not figures.lost
    assert figures.redelivered == 1 and figures.in_flight_at_kills == 1
    assert not figures.unexplained_redeliveries and not figures.twice_keyed
    [recovery] = figures.recoveries
    assert recovery.caught == 1 and round(recovery.settled, 1) == 18.1
    assert round(recovery.seconds, 1) == 18.1  # the only delivery after the kill
    met = {v.name: v.met for v in verdicts(figures)}
    assert met["redelivered after a crash"] and not met["recovery"]


def test_lost_twice_keyed_and_unexplained_are_named():
    outcomes = [Outcome(0, "k0", False, how="answered", request_id="r0"),
                Outcome(1, "k1", False, how="queued", request_id="r1"),
                Outcome(2, "", False, how="queued", request_id="r2")]
    deliveries = [Delivery(1.0, "r0", False, "k0", 0), Delivery(2.0, "rx", False, "k0", 0),
                  Delivery(3.0, "r2", True, "", 2), Delivery(4.0, "r2", True, "", 2)]
    records = {"r0": record("completed", 1, 1.1), "rx": record("completed", 2, 2.1),
               "r1": record("queued", 1.5, 1.5), "r2": record("completed", 3, 4.1)}
    figures = tally(outcomes, deliveries, records, [])
    assert figures.lost == ["seq 1: r1 still queued"]
    assert figures.twice_keyed == ["k0"]
    assert figures.unexplained_redeliveries == ["r2"]
    assert figures.unacknowledged == ["rx completed (seq 0: answered)"]
    met = {v.name: v.met for v in verdicts(figures)}
    assert not met["lost"] and not met["delivered twice because of a keyed retry"]
    assert not met["redelivered after a crash"] and met["refused"]


def test_percentile_is_the_nearest_rank():
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([float(n) for n in range(1, 21)], 0.95) == 19.0
