"""The monitor: keeps Redis true to Docker and agents running as their users asked.

Four loops on their own threads, so a slow one never holds up another:
- events: Docker's die/oom/start/pause/unpause/destroy for this installation's
  containers, recorded at once; the stream is reopened when it drops;
- control: due auto-restarts, periodic reconciliation (drift, containers removed behind
  our back, orphans) and the journal's janitor;
- probes: per-agent HTTP health checks (deploy's --health-* flags);
- metrics: per-agent resource samples into a bounded history.

Restart policy (auto-restart agents): the n-th restart within ``restart_window`` waits
``min(restart_cap, restart_base * 2**(n-1))``, jittered to 50-100 %; once ``restart_limit``
restarts fall within the window, the agent is marked ``failed`` with the reason.
"""

import argparse
import logging
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import urllib3

from agentainer import daemon
from agentainer.agents import AgentService
from agentainer.config import Config
from agentainer.errors import AgentainerError, AgentNotFound
from agentainer.health import HealthRecords, probe
from agentainer.janitor import Janitor
from agentainer.metrics import MetricsHistory, summarize
from agentainer.models import Agent
from agentainer.runtime import LABEL_ID, DockerRuntime
from agentainer.states import AgentStatus, Desired
from agentainer.status import ExitStatus
from agentainer.store import AgentStore
from agentainer.wiring import build

logger = logging.getLogger(__name__)

TICK = 0.25
JANITOR_INTERVAL = 1.0


@dataclass
class RestartPolicy:
    """Capped, jittered exponential backoff that gives up on a crash loop."""

    base: float
    cap: float
    limit: int
    window: float
    clock: Callable[[], float] = time.monotonic
    rand: Callable[[], float] = random.random
    _history: dict[str, deque] = field(default_factory=dict)

    def next_delay(self, agent_id: str) -> float | None:
        """Return how long to wait before restarting, or None to give up."""
        recent = self._recent(agent_id)
        if len(recent) >= self.limit:
            return None
        return min(self.cap, self.base * 2 ** len(recent)) * (0.5 + self.rand() / 2)

    def restarted(self, agent_id: str) -> None:
        self._recent(agent_id).append(self.clock())

    def forget(self, agent_id: str) -> None:
        self._history.pop(agent_id, None)

    def _recent(self, agent_id: str) -> deque:
        recent = self._history.setdefault(agent_id, deque())
        while recent and recent[0] < self.clock() - self.window:
            recent.popleft()
        return recent


class Monitor:
    """Watches this installation's agents; see the module docstring."""

    def __init__(self, agents: AgentService, store: AgentStore, runtime: DockerRuntime,
                 health: HealthRecords, history: MetricsHistory, janitor: Janitor,
                 policy: RestartPolicy, *, reconcile_interval: float, metrics_interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._agents = agents
        self._store = store
        self._runtime = runtime
        self._health = health
        self._history = history
        self._janitor = janitor
        self._policy = policy
        self._reconcile_interval = reconcile_interval
        self._metrics_interval = metrics_interval
        self._clock = clock
        self._http = urllib3.PoolManager(num_pools=256, maxsize=2)
        self._instance = ""
        self._due: dict[str, tuple[float, str]] = {}
        self._oom: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # -- running ----------------------------------------------------------------------

    def run(self) -> None:
        """Bring up agents that should run, then watch until :meth:`stop`."""
        self._instance = self._store.instance()
        self.bring_up()
        threads = [threading.Thread(target=self._guard, args=(loop,), name=loop.__name__,
                                    daemon=True)
                   for loop in (self._events_loop, self._probes_loop, self._metrics_loop)]
        for thread in threads:
            thread.start()
        self._guard(self._control_loop)

    def stop(self) -> None:
        self._stop.set()

    def _guard(self, loop: Callable[[], None]) -> None:
        """Run a loop forever: log what breaks it, back off, start it again."""
        delay = 1.0
        while not self._stop.is_set():
            try:
                loop()
                delay = 1.0
            except AgentainerError as ex:
                logger.warning("%s: %s; retrying in %.0fs", loop.__name__, ex.message, delay)
            except Exception:  # noqa: BLE001 - the monitor must outlive any one failure
                logger.exception("%s failed; retrying in %.0fs", loop.__name__, delay)
            self._stop.wait(delay)
            delay = min(delay * 2, 30.0)

    # -- events -----------------------------------------------------------------------

    def _events_loop(self) -> None:
        stream = self._runtime.events(self._instance, since=time.time())
        try:
            self.reconcile()  # NOTE: catch up on what happened while the stream was down
            for event in stream:
                if self._stop.is_set():
                    return
                self.on_event(event.get("Action", ""), event.get("Actor", {}).get(
                    "Attributes", {}))
        finally:
            stream.close()
        raise AgentainerError("the Docker event stream ended")

    def on_event(self, action: str, attributes: dict[str, str]) -> None:
        """Record one container event; handle a crash of an agent meant to run."""
        agent_id = attributes.get(LABEL_ID, "")
        if action == "oom":
            self._oom.add(agent_id)
            return
        try:
            agent = self._agents.reconcile(agent_id, wait=True)
        except AgentNotFound:
            return
        if action in ("die", "destroy") and agent is not None:
            if agent_id in self._oom:
                self._oom.discard(agent_id)
                reason = "killed: out of memory"
            elif action == "destroy":
                reason = "its container was removed"
            else:
                reason = f"exited with code {attributes.get('exitCode', '?')}"
            self._crashed(agent, reason)

    def _crashed(self, agent: Agent, reason: str) -> None:
        """Handle an agent that stopped although its user wants it running."""
        if agent.desired is not Desired.RUNNING or agent.status is AgentStatus.RUNNING:
            return  # NOTE: stopped by its user, or already back
        if not agent.spec.auto_restart:
            logger.info("agent %s: %s; stays down (no auto-restart)", agent.id, reason)
            self._agents.record_failure(agent.id, reason, give_up=False)
            return
        self._schedule_restart(agent, reason)

    def _schedule_restart(self, agent: Agent, reason: str) -> None:
        """Restart after the policy's backoff, or mark a crash loop ``failed``."""
        with self._lock:
            if agent.id in self._due:
                return
        delay = self._policy.next_delay(agent.id)
        if delay is None:
            verdict = (f"crash loop: {self._policy.limit} restarts within "
                       f"{self._policy.window:.0f}s; last: {reason}")
            logger.warning("agent %s: %s", agent.id, verdict)
            if agent.status is AgentStatus.RUNNING:
                self._agents.stop(agent.id)
            self._agents.record_failure(agent.id, verdict, give_up=True)
            self._policy.forget(agent.id)
            return
        logger.info("agent %s: %s; restarting in %.1fs", agent.id, reason, delay)
        self._store.update(agent.id, last_error=reason)
        with self._lock:
            self._due[agent.id] = (self._clock() + delay, reason)

    # -- control ----------------------------------------------------------------------

    def _control_loop(self) -> None:
        next_reconcile = self._clock() + self._reconcile_interval
        next_janitor = self._clock()
        while not self._stop.wait(TICK):
            self._restart_due()
            now = self._clock()
            if now >= next_janitor:
                self._janitor.run_once()
                next_janitor = now + JANITOR_INTERVAL
            if now >= next_reconcile:
                self.reconcile()
                next_reconcile = self._clock() + self._reconcile_interval

    def _restart_due(self) -> None:
        now = self._clock()
        with self._lock:
            due = [(agent_id, reason) for agent_id, (when, reason) in self._due.items()
                   if when <= now]
            for agent_id, _ in due:
                del self._due[agent_id]
        for agent_id, reason in due:
            try:
                agent = self._store.get(agent_id)
                if agent.desired is not Desired.RUNNING:
                    continue
                if agent.status is AgentStatus.RUNNING:
                    self._agents.restart(agent_id)
                else:
                    self._agents.start(agent_id)
            except AgentNotFound:
                continue
            except AgentainerError as ex:
                self._crashed(self._store.get(agent_id), f"restart failed: {ex.message}")
                continue
            self._policy.restarted(agent_id)
            self._health.reset(agent_id)
            self._store.count_restart(agent_id)
            logger.info("agent %s: restarted (%s)", agent_id, reason)

    def bring_up(self) -> None:
        """Start every agent whose user wants it running (after a stack or host restart)."""
        for agent in self._store.all():
            if agent.desired is Desired.RUNNING:
                try:
                    if self._agents.get(agent.id).status is not AgentStatus.RUNNING:
                        logger.info("agent %s: desired running; starting it", agent.id)
                        self._agents.start(agent.id)
                except AgentainerError as ex:
                    logger.warning("agent %s: cannot bring it up: %s", agent.id, ex.message)

    def reconcile(self) -> None:
        """Record Docker's view of every agent, act on crashes missed, remove orphans."""
        known = set()
        for agent in self._store.all():
            known.add(agent.id)
            current = self._agents.reconcile(agent.id)
            with self._lock:
                pending = agent.id in self._due
            if current is not None and not pending:
                self._crashed(current, "found stopped")
        for container_id, agent_id in self._runtime.containers_of_instance(
                self._instance).items():
            if agent_id not in known:
                logger.info("container %s: orphan of agent %s; removing it", container_id[:12],
                            agent_id or "?")
                self._runtime.remove(container_id)

    # -- probes and metrics -------------------------------------------------------------

    def _probes_loop(self) -> None:
        next_probe: dict[str, float] = {}
        while not self._stop.wait(TICK):
            now = self._clock()
            for agent in self._store.all():
                check = agent.spec.health_check
                if check is None or agent.status is not AgentStatus.RUNNING:
                    next_probe.pop(agent.id, None)
                    continue
                if now < next_probe.setdefault(agent.id, now + check.interval):
                    continue
                next_probe[agent.id] = now + check.interval
                self._probe(agent)

    def _probe(self, agent: Agent) -> None:
        _, route = self._store.routing(agent.id)
        if not route:
            return
        check = agent.spec.health_check
        result = probe(self._http, route, check)
        failures = self._health.record(agent.id, result)
        if failures < check.retries:
            return
        reason = f"health probe failed {failures} times: {result.message}"
        if agent.spec.auto_restart:
            self._schedule_restart(agent, reason)
        elif failures == check.retries:
            logger.info("agent %s: unhealthy: %s (no auto-restart)", agent.id, reason)

    def _metrics_loop(self) -> None:
        while not self._stop.wait(self._metrics_interval):
            for agent in self._store.all():
                if agent.status is AgentStatus.RUNNING and agent.container_id:
                    try:
                        stats = self._runtime.stats(agent.container_id)
                    except AgentainerError:
                        continue
                    self._history.record(agent.id, summarize(stats, now=time.time()))


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentainer-monitor", allow_abbrev=False,
        description="Watch agents: Docker events, health probes, auto-restart with backoff, "
                    "reconciliation and metrics (normally run by supervisord).")
    daemon.add_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return daemon.run("agentainer-monitor", make_parser().parse_args(argv), watch)


def watch(settings: Config) -> int:
    """Build a monitor from the settings and run it until TERM."""
    c = build(settings)
    monitor = Monitor(
        c.agents, c.store, c.runtime, c.health, c.history,
        Janitor(c.store, c.journal, schedule=c.scheduler.schedule),
        RestartPolicy(base=settings.restart_base, cap=settings.restart_cap,
                      limit=settings.restart_limit, window=settings.restart_window),
        reconcile_interval=settings.reconcile_interval,
        metrics_interval=settings.metrics_interval)
    signal.signal(signal.SIGTERM, lambda *_: monitor.stop())
    monitor.run()
    return ExitStatus.SUCCESS
