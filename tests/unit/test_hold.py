"""Prefer (RFC 7240) and the hold decision for a queued proxied request."""

import pytest

from agentainer.api.hold import Preference, decide, parse_prefer
from agentainer.api.inflight import Slots
from agentainer.journal.journal import Admission, Outcome, Wait
from agentainer.statuses import AgentStatus, Desired


def queued(status: AgentStatus = AgentStatus.STOPPED, desired: Desired = Desired.RUNNING,
           hold: float | None = None) -> Admission:
    return Admission(Outcome.QUEUED, "a1", agent_status=status, desired=desired,
                     wait=Wait.DOWN, hold=hold)


@pytest.mark.parametrize("header, expected", [
    (None, Preference()),
    ("", Preference()),
    ("wait=10", Preference(wait=10)),
    ("Wait = 5", Preference(wait=5)),
    ('wait="7"', Preference(wait=7)),
    ("respond-async", Preference(respond_async=True)),
    ("respond-async, wait=3", Preference(wait=3, respond_async=True)),
    ("handling=lenient, wait=2;foo=bar", Preference(wait=2)),
    ("wait=abc", Preference()),
    ("wait=-1", Preference()),
    ("wait=1.5", Preference()),       # NOTE: delta-seconds are whole
    ("wait=99999999", Preference(wait=99999999)),
    ("return=minimal; wait=4", Preference()),  # NOTE: a parameter, not a preference
    ("wait=4, wait=9", Preference(wait=4)),    # NOTE: the first one counts (RFC 7240 §2)
])
def test_parse_prefer(header, expected):
    assert parse_prefer(header) == expected


def test_every_hold_is_capped():
    decision = decide(parse_prefer("wait=99999999"), queued(), default=30)
    assert (decision.seconds, decision.applied) == (3600, "wait=3600")
    assert decide(Preference(), queued(hold=1e9), default=30).seconds == 3600


def test_wait_is_honoured_and_said():
    decision = decide(Preference(wait=10), queued(), default=30)
    assert (decision.seconds, decision.applied) == (10, "wait=10")


def test_wait_zero_is_a_202_at_once_that_honours_it():
    assert decide(Preference(wait=0), queued(), default=30).seconds == 0


def test_respond_async_is_a_202_at_once():
    decision = decide(Preference(respond_async=True), queued(), default=30)
    assert (decision.seconds, decision.applied) == (0, "respond-async")


def test_the_agent_hold_beats_the_setting_and_is_not_a_preference():
    assert decide(Preference(), queued(hold=5), default=30) == decide(
        Preference(), queued(hold=5), default=1)
    decision = decide(Preference(), queued(hold=5), default=30)
    assert (decision.seconds, decision.applied) == (5, "")
    assert decide(Preference(), queued(), default=30).seconds == 30


@pytest.mark.parametrize("admission", [
    queued(desired=Desired.STOPPED), queued(AgentStatus.PAUSED, Desired.PAUSED),
    queued(AgentStatus.FAILED)])
def test_no_default_hold_for_an_agent_nothing_will_start(admission):
    assert decide(Preference(), admission, default=30).seconds == 0
    # NOTE: a caller that asks to wait waits (a user may start the agent meanwhile)
    assert decide(Preference(wait=3), admission, default=30).seconds == 3


def test_hold_limit():
    holds = Slots(2)
    assert holds.enter() and holds.enter()
    assert not holds.enter()
    holds.leave()
    assert holds.enter()


def test_an_idle_agent_is_held_by_default():
    idle = Admission(Outcome.QUEUED, "a1", agent_status=AgentStatus.STOPPED,
                     desired=Desired.STOPPED, wait=Wait.DOWN, idle=True)
    assert decide(Preference(), idle, default=30).seconds == 30
