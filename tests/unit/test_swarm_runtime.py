"""The Swarm backend's pure parts: a service's status from its tasks, its task watch, what
each backend refuses, and the deploy fields only Swarm uses. The backend against a real
swarm: tests/swarm/."""

import pytest

from agentainer.agents.docker_runtime import DockerRuntime
from agentainer.agents.runtime import RuntimeEvent
from agentainer.agents.spec import AgentSpec, parse_deploy
from agentainer.agents.swarm_runtime import SwarmRuntime, _state, _TaskWatch, _unix
from agentainer.errors import Conflict, InvalidInput
from agentainer.statuses import AgentStatus, IdleAction

SERVICE = {"ID": "svc", "Spec": {"Name": "agentainer-agent-1", "Labels": {
    "agentainer.id": "agent-1"}, "Mode": {"Replicated": {"Replicas": 1}}}}


def task(state: str, *, created: str = "2026-12-01T10:00:00.5Z", exit_code: int = 0,
         err: str = "", task_id: str = "t1") -> dict:
    return {"ID": task_id, "ServiceID": "svc", "CreatedAt": created,
            "Status": {"State": state, "Err": err,
                       "ContainerStatus": {"ExitCode": exit_code}}}


def scaled(replicas: int) -> dict:
    return {**SERVICE, "Spec": {**SERVICE["Spec"], "Mode": {"Replicated": {
        "Replicas": replicas}}}}


def test_a_service_never_scaled_up_is_created():
    assert _state(scaled(0), []).status is AgentStatus.CREATED


def test_a_running_task_makes_the_agent_running_at_the_service_name():
    state = _state(SERVICE, [task("shutdown"), task("running", task_id="t2")])
    assert (state.status, state.ip) == (AgentStatus.RUNNING, "agentainer-agent-1")


def test_a_task_on_its_way_reads_running_unless_swarm_reports_why_it_waits():
    assert _state(SERVICE, [task("preparing")]).status is AgentStatus.RUNNING
    stuck = _state(SERVICE, [task("pending", err="no suitable node")])
    assert (stuck.status, stuck.error) == (AgentStatus.STOPPED, "no suitable node")


def test_a_crashed_task_gives_its_exit_code_from_the_newest_task():
    state = _state(SERVICE, [
        task("failed", created="2026-12-01T10:00:00Z", exit_code=1, task_id="old"),
        task("failed", created="2026-12-01T10:00:09Z", exit_code=137, task_id="new")])
    assert (state.status, state.exit_code, state.error, state.ip) == (
        AgentStatus.STOPPED, 137, "", "")


def test_a_scaled_down_service_is_stopped():
    assert _state(scaled(0), [task("starting")]).status is AgentStatus.STOPPED


def test_swarm_timestamps_keep_their_fraction():
    assert _unix("1970-01-01T00:00:10.250000000Z") == pytest.approx(10.25)
    assert _unix("1970-01-01T00:00:10Z") == 10.0


class Tasks:
    """What services_and_tasks answers, set by the test between looks."""

    def __init__(self) -> None:
        self.services = [SERVICE]
        self.tasks: list[dict] = []

    def services_and_tasks(self, instance: str) -> tuple[list[dict], list[dict]]:
        return self.services, self.tasks


def look(watch: _TaskWatch) -> list[RuntimeEvent]:
    watch._look(emit=True)
    events = list(watch._pending)
    watch._pending.clear()
    return events


def test_the_watch_turns_task_changes_into_the_monitors_events():
    source = Tasks()
    source.tasks = [task("running", task_id="before")]
    watch = _TaskWatch(source, "inst")  # type: ignore[arg-type]
    assert look(watch) == []  # NOTE: what ran before the watch began is no event
    source.tasks = [task("failed", exit_code=3, task_id="before")]
    assert look(watch) == [RuntimeEvent("die", "agent-1", "3")]
    source.tasks.append(task("running", created="2999-01-01T00:00:00Z", task_id="next"))
    assert look(watch) == [RuntimeEvent("start", "agent-1")]
    source.services, source.tasks = [], []
    assert look(watch) == [RuntimeEvent("destroy", "agent-1")]
    watch.close()
    assert list(watch) == []


def test_the_watch_sees_a_task_that_came_and_went_between_two_looks():
    source = Tasks()
    watch = _TaskWatch(source, "inst")  # type: ignore[arg-type]
    source.tasks = [task("failed", created="2999-01-01T00:00:00Z", exit_code=1)]
    assert look(watch) == [RuntimeEvent("die", "agent-1", "1")]


def spec(**fields) -> AgentSpec:
    return parse_deploy({"name": "a", "image": "agentainer/echo-agent:latest", **fields})[0]


def test_the_docker_runtime_refuses_replicas_and_constraints():
    for fields in ({"replicas": 2}, {"constraints": ["node.labels.gpu==true"]}):
        with pytest.raises(Conflict) as refused:
            DockerRuntime().check(spec(**fields))
        assert refused.value.code == "needs_swarm"
    DockerRuntime().check(spec(replicas=1))


def test_swarm_refuses_pause_and_an_idle_rule_that_would_pause():
    runtime = SwarmRuntime()
    with pytest.raises(Conflict) as refused:
        runtime.check(spec(idle_timeout="5m", idle_action=IdleAction.PAUSE.value))
    assert refused.value.code == "pause_unsupported"
    runtime.check(spec(idle_timeout="5m", idle_action="stop", replicas=3))
    with pytest.raises(Conflict) as paused:
        runtime.pause("svc")
    assert paused.value.code == "pause_unsupported"


@pytest.mark.parametrize("fields, wrong", [
    ({"replicas": 0}, "replicas"), ({"replicas": 101}, "replicas"),
    ({"replicas": "2"}, None), ({"constraints": "node.role==manager"}, "constraints"),
    ({"constraints": ["node.role = = manager"]}, "constraints"),
    ({"constraints": ["node.labels.gpu==true; rm"]}, "constraints"),
    ({"constraints": ["node.labels.gpu==true", "node.role!=manager"]}, None),
])
def test_deploy_checks_replicas_and_constraints(fields, wrong):
    if wrong is None:
        spec(**fields)
        return
    with pytest.raises(InvalidInput, match=wrong):
        spec(**fields)


def test_constraints_survive_the_store():
    stored = spec(constraints=["node.labels.gpu==true"], replicas=2)
    assert AgentSpec.from_dict(stored.to_dict()) == stored
