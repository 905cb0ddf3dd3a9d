import argparse

import pytest

from agentainer.statuses import OPERATIONS, AgentStatus, observed

S = AgentStatus
ACT, NOOP, CONFLICT = "act", "no-op", "conflict"

LIFECYCLE = {
    "start": {S.CREATED: ACT, S.STOPPED: ACT, S.FAILED: ACT, S.RUNNING: NOOP, S.PAUSED: CONFLICT},
    "stop": {S.RUNNING: ACT, S.PAUSED: ACT, S.STOPPED: NOOP, S.CREATED: NOOP, S.FAILED: NOOP},
    "restart": {S.RUNNING: ACT, S.PAUSED: CONFLICT, S.STOPPED: CONFLICT, S.CREATED: CONFLICT,
                S.FAILED: CONFLICT},
    "pause": {S.RUNNING: ACT, S.PAUSED: CONFLICT, S.STOPPED: CONFLICT, S.CREATED: CONFLICT,
              S.FAILED: CONFLICT},
    "resume": {S.CREATED: ACT, S.STOPPED: ACT, S.FAILED: ACT, S.PAUSED: ACT, S.RUNNING: NOOP},
}


def test_operations_are_exactly_the_lifecycle_ones():
    assert set(OPERATIONS) == set(LIFECYCLE)


@pytest.mark.parametrize("op", LIFECYCLE)
@pytest.mark.parametrize("status", AgentStatus)
def test_lifecycle_table(op, status):
    operation = OPERATIONS[op]
    expected = LIFECYCLE[op][status]
    if expected == CONFLICT:
        with pytest.raises(ValueError, match=f"^cannot {op} an agent that is {status.value}"):
            operation.check(status)
    else:
        assert operation.check(status) is (expected == ACT)


def test_starting_a_paused_agent_points_to_resume():
    with pytest.raises(ValueError, match="resume"):
        OPERATIONS["start"].check(S.PAUSED)


@pytest.mark.parametrize("docker_status", [None, S.STOPPED])
@pytest.mark.parametrize("recorded", AgentStatus)
def test_observed_gone_or_stopped_container(recorded, docker_status):
    expected = S.FAILED if recorded is S.FAILED else S.STOPPED
    assert observed(recorded, docker_status) is expected


@pytest.mark.parametrize("docker_status", [S.RUNNING, S.PAUSED, S.CREATED])
@pytest.mark.parametrize("recorded", AgentStatus)
def test_observed_passes_live_statuses_through(recorded, docker_status):
    assert observed(recorded, docker_status) is docker_status


def test_every_operation_is_a_service_method_and_a_command():
    from agentainer.agents.service import AgentService
    from agentainer.cli.parser import make_parser

    subcommands = next(action for action in make_parser()._actions
                       if isinstance(action, argparse._SubParsersAction)).choices
    for name in OPERATIONS:
        assert callable(getattr(AgentService, name))
        assert subcommands[name].description == OPERATIONS[name].summary
