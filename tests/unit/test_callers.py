"""Gateway callers: identified by address, cached while the route holds, may_call applied."""

import pytest

from agentainer.agents.callers import STRANGER_TTL, Callers
from agentainer.agents.spec import Agent, AgentSpec
from agentainer.errors import AgentNotFound, CallNotAllowed, NotAnAgent
from agentainer.statuses import AgentStatus, Desired


def agent(agent_id: str, name: str, **spec) -> Agent:
    return Agent(agent_id, AgentSpec(name=name, image="x", **spec), AgentStatus.RUNNING,
                 Desired.RUNNING, "c", "t", "t")


class FakeStore:
    def __init__(self, agents: list[Agent], routes: dict[str, str]) -> None:
        self.agents = {a.id: a for a in agents}
        self.routes = routes

    def instance(self) -> str:
        return "inst"

    def get(self, agent_id: str) -> Agent:
        if agent_id not in self.agents:
            raise AgentNotFound(agent_id)
        return self.agents[agent_id]

    def routing(self, agent_id: str) -> tuple[AgentStatus, str]:
        if agent_id not in self.agents:
            raise AgentNotFound(agent_id)
        return AgentStatus.RUNNING, self.routes.get(agent_id, "")

    def resolve(self, ref: str) -> str:
        for a in self.agents.values():
            if ref in (a.id, a.name):
                return a.id
        raise AgentNotFound(ref)


class FakeRuntime:
    def __init__(self, addresses: dict[str, str]) -> None:
        self.addresses_now = addresses
        self.lookups = 0

    def addresses(self, networks, instance: str) -> dict[str, str]:
        assert (networks, instance) == (("net", "internal"), "inst")
        self.lookups += 1
        return dict(self.addresses_now)


A = agent("agent-aaaaaaaaaaaa", "a")
B = agent("agent-bbbbbbbbbbbb", "b")


@pytest.fixture
def world():
    store = FakeStore([A, B], {A.id: "10.0.0.2:8000", B.id: "10.0.0.3:8000"})
    runtime = FakeRuntime({"10.0.0.2": A.id, "10.0.0.3": B.id})
    clock = [0.0]
    return store, runtime, clock, Callers(store, runtime, ("net", "internal"),
                                          clock=lambda: clock[0])


def test_an_agent_is_identified_once_then_from_the_cache(world):
    store, runtime, _, callers = world
    assert callers.identify("10.0.0.2") == A
    assert callers.identify("10.0.0.2") == A
    assert runtime.lookups == 1


def test_a_cached_address_that_moved_to_another_agent_is_looked_up_again(world):
    store, runtime, _, callers = world
    callers.identify("10.0.0.2")
    store.routes[A.id] = ""                        # a stopped...
    store.routes[B.id] = "10.0.0.2:8000"           # ... and its address reused
    runtime.addresses_now = {"10.0.0.2": B.id}
    assert callers.identify("10.0.0.2") == B
    assert runtime.lookups == 2


def test_a_cached_agent_removed_since_is_looked_up_again(world):
    store, runtime, _, callers = world
    callers.identify("10.0.0.2")
    del store.agents[A.id]
    runtime.addresses_now = {}
    with pytest.raises(NotAnAgent):
        callers.identify("10.0.0.2")


def test_a_stranger_is_refused_and_not_looked_up_again_for_a_while(world):
    _, runtime, clock, callers = world
    for _ in range(3):
        with pytest.raises(NotAnAgent):
            callers.identify("172.17.0.5")
    assert runtime.lookups == 1
    clock[0] += STRANGER_TTL + 0.1
    with pytest.raises(NotAnAgent):
        callers.identify("172.17.0.5")
    assert runtime.lookups == 2


def test_an_address_of_an_unknown_agent_id_is_no_agent(world):
    _, runtime, _, callers = world
    runtime.addresses_now["10.0.0.9"] = "agent-999999999999"  # an orphan
    with pytest.raises(NotAnAgent):
        callers.identify("10.0.0.9")


@pytest.mark.parametrize("may_call, egress, target, allowed", [
    (None, True, "b", True),                 # egress: any, by default
    (None, False, "b", False),               # --no-egress: none, by default
    (("*",), False, "b", True),
    (("b",), False, "b", True),
    (("b",), False, B.id, True),             # by ID, listed by name
    ((B.id,), True, "b", True),              # by name, listed by ID
    (("b",), True, "a", False),
    ((), True, "b", False),
    (("b",), False, "nosuch", False),        # no oracle: the same refusal
    (("nosuch",), False, "nosuch", False),
])
def test_may_call(world, may_call, egress, target, allowed):
    _, _, _, callers = world
    caller = agent("agent-cccccccccccc", "c", may_call=may_call, egress=egress)
    if allowed:
        callers.check(caller, target)
    else:
        with pytest.raises(CallNotAllowed) as refused:
            callers.check(caller, target)
        assert refused.value.code == "call_not_allowed"
