"""Per-agent HTTP health probes and their schedule; the results are kept by
:class:`~agentainer.agents.observations.HealthRecords`."""

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable

import urllib3

from agentainer.agents.observations import HealthRecords, ProbeResult
from agentainer.agents.spec import Agent, HealthCheck
from agentainer.agents.store import AgentStore
from agentainer.errors import AgentNotFound
from agentainer.monitor.lanes import Lanes
from agentainer.statuses import AgentStatus

logger = logging.getLogger(__name__)

POOL_SIZE = 8


def probe(http: urllib3.PoolManager, route: str, check: HealthCheck) -> ProbeResult:
    """GET the agent's health endpoint straight from its container; 2xx/3xx is healthy."""
    try:
        reply = http.request("GET", f"http://{route}{check.endpoint}", retries=False,
                             redirect=False, timeout=urllib3.Timeout(total=check.timeout))
    except urllib3.exceptions.HTTPError as ex:
        return ProbeResult(False, None, f"no answer: {ex.__class__.__name__}")
    healthy = 200 <= reply.status < 400
    return ProbeResult(healthy, reply.status, "ok" if healthy else f"HTTP {reply.status}")


Prober = Callable[[urllib3.PoolManager, str, HealthCheck], ProbeResult]


class HealthWatch:
    """Probes running agents, each on its own schedule, on a bounded pool of threads.

    A failure counts only after the agent's start grace: from a (re)start until
    ``interval x retries`` later, or until its first healthy probe if that comes sooner.
    Each start (and the monitor's first sight of a running agent) clears the failures, so
    a streak never carries over to the next run. ``on_unhealthy(agent, failures, result)``
    is called for each counted failure once failures reach the retries.
    """

    def __init__(self, records: HealthRecords, store: AgentStore,
                 on_unhealthy: Callable[[Agent, int, ProbeResult], None], *,
                 clock: Callable[[], float] = time.monotonic, prober: Prober = probe,
                 workers: int = POOL_SIZE) -> None:
        self._records = records
        self._store = store
        self._on_unhealthy = on_unhealthy
        self._clock = clock
        self._prober = prober
        self._http = urllib3.PoolManager(num_pools=256, maxsize=2)
        self._lanes = Lanes(workers, "probe")
        self._next: dict[str, float] = {}   # NOTE: only tick() (one thread) touches it
        self._grace: dict[str, float] = {}  # agent -> until when failures don't count
        self._lock = threading.Lock()

    def tick(self, agents: Iterable[Agent]) -> None:
        """Start the probes that are due; forget the schedule of agents no longer probed."""
        now = self._clock()
        probed = set()
        for agent in agents:
            check = agent.spec.health_check
            if check is None or agent.status is not AgentStatus.RUNNING:
                continue
            probed.add(agent.id)
            if agent.id not in self._next:
                self._next[agent.id] = now + check.interval
                self.started(agent, again=False)
            elif now >= self._next[agent.id] and self._lanes.submit(
                    agent.id, functools.partial(self.probe, agent)):
                self._next[agent.id] = now + check.interval
        for agent_id in self._next.keys() - probed:
            del self._next[agent_id]
            with self._lock:
                self._grace.pop(agent_id, None)

    def started(self, agent: Agent, *, again: bool = True) -> None:
        """Begin the agent's start grace and clear its failures (without ``again``, keep
        a grace already begun, and the failures with it)."""
        check = agent.spec.health_check
        if check is None:
            return
        with self._lock:
            if not again and agent.id in self._grace:
                return
            self._grace[agent.id] = self._clock() + check.interval * check.retries
        self._records.reset(agent.id)

    def forget(self, agent_id: str) -> None:
        """Drop the agent's grace (the agent was removed; its probe results went with its
        record)."""
        with self._lock:
            self._grace.pop(agent_id, None)

    def shutdown(self) -> None:
        """Stop probing (probes under way end on their own)."""
        self._lanes.shutdown()

    def probe(self, agent: Agent) -> None:
        """Probe one agent now and record the result."""
        check = agent.spec.health_check
        if check is None:
            return  # NOTE: tick() probes only the agents with a health check
        try:
            _, route = self._store.routing(agent.id)
        except AgentNotFound:
            return  # NOTE: removed meanwhile; its health record went with it
        if not route:
            return
        result = self._prober(self._http, route, check)
        counted = not self._in_grace(agent.id, result.healthy)  # NOTE: healthy ends it
        failures = self._records.record(agent.id, result, counted=counted)
        # NOTE: not for an uncounted failure: the count it returns is the one stored before.
        if counted and not result.healthy and failures >= check.retries:
            self._on_unhealthy(agent, failures, result)

    def _in_grace(self, agent_id: str, healthy: bool) -> bool:
        with self._lock:
            until = self._grace.get(agent_id)
            if until is None:
                return False
            if healthy or self._clock() >= until:
                del self._grace[agent_id]
                return False
            return True
