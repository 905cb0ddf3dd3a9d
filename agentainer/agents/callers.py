"""Who calls the proxy on a network gateway, and whom it may call.

APPSEC: the gateways (where agents reach the proxy) are host addresses: besides the agents
on that network, any host process and any container on another Docker network can route
to them. A caller is therefore identified by its source address, which must be one of
this installation's running agent containers on Agentainer's networks (a TCP peer cannot
fake its address and still complete the handshake), and its ``may_call`` decides which
agents it reaches.
"""

import logging
import time
from collections.abc import Callable

from agentainer.agents.runtime import Runtime
from agentainer.agents.spec import ANY_AGENT, Agent
from agentainer.agents.store import AgentStore
from agentainer.errors import AgentNotFound, CallNotAllowed, NotAnAgent

logger = logging.getLogger(__name__)

# NOTE: how long an address found to be no agent is refused without asking Docker again,
# so a flood from a stranger costs one Docker call per address and period, not per request
STRANGER_TTL = 2.0
MAX_STRANGERS = 4096  # NOTE: past this many, expired entries are dropped


class Callers:
    """Identifies the agent behind a gateway connection and applies its ``may_call``.

    An address is looked up in Docker once, then kept; a kept answer holds while the
    agent's recorded route still has that address (a stopped agent's address may go to
    another container), and is looked up again otherwise.
    """

    def __init__(self, store: AgentStore, runtime: Runtime, networks: tuple[str, ...],
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._runtime = runtime
        self._networks = networks
        self._clock = clock
        self._agents: dict[str, Agent] = {}      # address -> agent (its spec is immutable)
        self._strangers: dict[str, float] = {}   # address -> refused until
        self._instance: str | None = None

    def identify(self, address: str) -> Agent:
        """Return the agent whose container has this address.

        Raises:
            NotAnAgent: no running agent container of this installation has it.
            Unavailable: Docker or Redis cannot be reached.
        """
        agent = self._agents.get(address)
        if agent is not None:
            if self._route_address(agent.id) == address:
                return agent
        elif self._strangers.get(address, 0.0) > self._clock():
            raise NotAnAgent(address)
        if self._instance is None:
            self._instance = self._store.instance()
        found = self._runtime.addresses(self._networks, self._instance)
        agent_id = found.get(address)
        if agent_id is None:
            self._agents.pop(address, None)
            if len(self._strangers) >= MAX_STRANGERS:
                now = self._clock()
                self._strangers = {a: t for a, t in self._strangers.items() if t > now}
            self._strangers[address] = self._clock() + STRANGER_TTL
            logger.info("gateway: %s is not an agent; refused", address)
            raise NotAnAgent(address)
        try:
            agent = self._store.get(agent_id)
        except AgentNotFound:
            raise NotAnAgent(address) from None  # NOTE: an orphan the monitor will remove
        self._strangers.pop(address, None)
        self._agents[address] = agent
        return agent

    def check(self, caller: Agent, target: str) -> None:
        """Allow the call only to an agent named (by name or ID) in the caller's may_call.

        Raises:
            CallNotAllowed: not named, or no such agent (so that is no oracle either).
            Unavailable: Redis cannot be reached.
        """
        allowed = caller.spec.calls_allowed
        if ANY_AGENT in allowed:
            return
        try:
            called = self._store.get(self._store.resolve(target))
        except AgentNotFound:
            raise CallNotAllowed(caller.name, target) from None
        # PERF: names are unique, so the target's ID and name say it: no lookup per entry
        if called.id not in allowed and called.name not in allowed:
            raise CallNotAllowed(caller.name, target)

    def _route_address(self, agent_id: str) -> str:
        try:
            _, route = self._store.routing(agent_id)
        except AgentNotFound:
            return ""  # NOTE: removed since: its address may be another's now
        return route.rpartition(":")[0]
