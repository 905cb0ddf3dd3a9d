"""The monitor: keeps Redis true to Docker and agents running as their users asked.

Five loops on their own threads, so a slow one never holds up another:
- events: Docker's die/oom/start/pause/unpause/destroy for this installation's
  containers, recorded at once; the stream is reopened when it drops;
- control: due auto-restarts, periodic reconciliation (drift, containers removed behind
  our back, orphans) and the journal's janitor;
- probes: per-agent HTTP health checks (deploy's --health-* flags), each agent on its own
  schedule, run on a small thread pool so a hanging agent delays no other;
- metrics: per-agent resource samples into a bounded history, on a pool likewise;
- idle: the idle rule (deploy's ``idle_timeout``): an agent the journal finds idle is
  marked so in the same step (:meth:`Journal.mark_idle`), then stopped or paused on a pool
  like the probes (:meth:`AgentService.go_idle`); a request to it wakes it
  (:meth:`AgentService.wake`, called by the proxy).

Auto-restart agents are restarted as :class:`~agentainer.monitor.restarts.RestartPolicy` says. An
agent paused behind our back (``docker pause``) is recorded as paused, not as a crash.

A stopping Docker daemon stops every container, as ``docker stop`` would, and leaves nothing
in their state to tell the two apart; but it closes its socket first. So an agent that dies
while Docker takes no new connection went down with Docker, not by a crash: it is not judged
(its desired state stays running, no restart is counted), and the first pass that reaches
Docker again starts every agent meant to run, as the monitor's own start does.

What it decides about an agent is also a webhook event of that agent (``emit``,
:meth:`agentainer.webhooks.outbox.Webhooks.emit`): a crash (``agent.crashed``), an
auto-restart made (``agent.restarted``), giving up on it (``agent.failed``).
"""

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentainer.agents.observations import HealthRecords, MetricsHistory, ProbeResult
from agentainer.agents.runtime import ContainerGone, Runtime, RuntimeEvent
from agentainer.agents.service import AgentService
from agentainer.agents.spec import Agent
from agentainer.agents.store import AgentStore
from agentainer.backoff import backoff
from agentainer.errors import AgentainerError, AgentNotFound, MountRefused, Unavailable
from agentainer.journal.janitor import Janitor
from agentainer.journal.journal import Journal
from agentainer.monitor.lanes import Lanes
from agentainer.monitor.probes import POOL_SIZE, HealthWatch, Prober, probe
from agentainer.monitor.restarts import RestartPolicy
from agentainer.statuses import AgentStatus, Desired, Idle
from agentainer.webhooks.outbox import EventType

logger = logging.getLogger(__name__)

TICK = 0.25
IDLE_TICK = 0.5        # how often the idle rule looks (an agent idles within this late)
STABLE_RUN = 10.0      # a loop that ran this long before failing retries after 1 s again
GUARD_BASE, GUARD_CAP = 1.0, 30.0  # a broken loop's restarts: 1 s doubling to 30 s, jittered
ORPHAN_GRACE = 60.0    # a container younger than this may belong to a deploy in progress
OOM_WINDOW = 10.0      # an oom event labels a die within this long as out of memory

Emit = Callable[[str, EventType, dict[str, Any]], object]  # an agent's webhook event


def _no_events(agent_id: str, event: EventType, data: dict[str, Any]) -> None:
    """The ``emit`` of a monitor built without webhooks (the unit tests')."""


@dataclass(frozen=True)
class MonitorSettings:
    """The monitor's pace and seams.

    ``reconcile_interval`` and ``metrics_interval`` are seconds between reconciliations
    and between metrics samples; ``workers`` how many probes (and samples) run at once;
    ``clock`` (monotonic) times backoffs and probes, ``wall_clock`` compares with
    Docker's timestamps; ``prober`` runs one health probe. Tests pass fakes for the last
    three.
    """

    reconcile_interval: float
    metrics_interval: float
    workers: int = POOL_SIZE
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    prober: Prober = probe


class Monitor:
    """Watches this installation's agents; see the module docstring."""

    def __init__(self, agents: AgentService, store: AgentStore, runtime: Runtime,
                 health: HealthRecords, history: MetricsHistory, janitor: Janitor,
                 journal: Journal, policy: RestartPolicy, settings: MonitorSettings, *,
                 emit: Emit = _no_events) -> None:
        self._agents = agents
        self._emit = emit
        self._store = store
        self._runtime = runtime
        self._health = health
        self._history = history
        self._janitor = janitor
        self._journal = journal
        self._policy = policy
        self._reconcile_interval = settings.reconcile_interval
        self._metrics_interval = settings.metrics_interval
        self._clock = settings.clock
        self._wall_clock = settings.wall_clock
        self._watch = HealthWatch(health, store, self._unhealthy_agent, clock=settings.clock,
                                  prober=settings.prober, workers=settings.workers)
        self._samplers = Lanes(settings.workers, "metrics")
        self._idlers = Lanes(settings.workers, "idle")
        self._instance = ""
        # NOTE: these are shared by the events, control and probe threads: guard with _lock.
        self._due: dict[str, tuple[float, str, bool]] = {}  # when, reason, for failed probes
        self._oom: dict[str, float] = {}     # agent -> when its oom event came
        self._seen: set[str] = set()         # agents the last reconciliation found
        self._bring_up_due = False           # Docker not reached since start, or went away
        self._away = 0                       # how often it was seen away (see _back)
        self._lock = threading.Lock()
        self._reconciling = threading.Lock()  # NOTE: one pass at a time (events, control)
        self._stop = threading.Event()

    # -- running ----------------------------------------------------------------------

    def run(self) -> None:
        """Bring up agents that should run, then watch until :meth:`stop`."""
        self._instance = self._store.instance()
        with self._lock:
            self._bring_up_due = True  # NOTE: done by the first pass that reaches Docker
        threads = [threading.Thread(target=self._guard, args=(loop,), name=loop.__name__,
                                    daemon=True)
                   for loop in (self._events_loop, self._probes_loop, self._metrics_loop,
                                self._idle_loop)]
        for thread in threads:
            thread.start()
        try:
            self._guard(self._control_loop)
        finally:
            self._watch.shutdown()
            self._samplers.shutdown()
            self._idlers.shutdown()

    def stop(self) -> None:
        """Ask every loop to end."""
        self._stop.set()

    def _guard(self, loop: Callable[[], None]) -> None:
        """Run a loop forever: log what breaks it, back off, start it again."""
        failures = 0
        while not self._stop.is_set():
            began = self._clock()
            try:
                loop()
            except Exception as ex:  # noqa: BLE001 - the monitor must outlive any one failure
                if self._clock() - began >= STABLE_RUN:
                    failures = 0  # NOTE: it ran well for a while: not part of a failure streak
                failures += 1
                delay = backoff(failures, base=GUARD_BASE, cap=GUARD_CAP,
                                rand=self._policy.rand)
                if isinstance(ex, AgentainerError):
                    logger.warning("%s: %s; retrying in %.1fs", loop.__name__, ex.message,
                                   delay)
                else:
                    logger.exception("%s failed; retrying in %.1fs", loop.__name__, delay)
                self._stop.wait(delay)

    # -- events -----------------------------------------------------------------------

    def _events_loop(self) -> None:
        try:
            stream = self._runtime.events(self._instance, since=time.time())
        except Unavailable:
            self._docker_away()
            raise
        try:
            self.reconcile()  # NOTE: catch up on what happened while the stream was down
            for event in stream:
                if self._stop.is_set():
                    return
                self.on_event(event)
        finally:
            stream.close()
            # NOTE: a stopping dockerd ends the stream ~1 s after its last container stopped
            if not self._stop.is_set() and not self._runtime.reachable():
                self._docker_away()
        raise AgentainerError("the Docker event stream ended")

    def on_event(self, event: RuntimeEvent) -> None:
        """Record one container event; handle a crash of an agent meant to run."""
        agent_id, action = event.agent_id, event.action
        if not agent_id:
            return
        if action == "oom":
            with self._lock:
                self._oom[agent_id] = self._clock()
            return
        try:
            agent = self._agents.reconcile(agent_id, wait=True)
        except AgentNotFound:
            self._forget(agent_id)
            return
        if action == "start":
            with self._lock:
                self._oom.pop(agent_id, None)
            self._watch.started(agent)
        elif action in ("die", "destroy"):
            with self._lock:
                oom = self._oom.pop(agent_id, None)
            if oom is not None and self._clock() - oom <= OOM_WINDOW:
                reason = "killed: out of memory"
            elif action == "destroy":
                reason = "its container was removed"
            else:
                reason = f"exited with code {event.exit_code or '?'}"
            self._crashed(agent, reason)

    def _crashed(self, agent: Agent, reason: str) -> None:
        """Handle an agent that stopped although its user wants it running."""
        if agent.desired is not Desired.RUNNING or agent.status is AgentStatus.RUNNING:
            return  # NOTE: stopped by its user, or already back
        if self._went_with_docker(agent, reason):
            return
        self._emit(agent.id, EventType.AGENT_CRASHED,
                   {"reason": reason, "auto_restart": agent.spec.auto_restart})
        if not agent.spec.auto_restart:
            logger.info("agent %s: %s; stays down (no auto-restart)", agent.id, reason)
            self._agents.record_failure(agent.id, reason, give_up=False)
            return
        self._schedule_restart(agent, reason)

    def _went_with_docker(self, agent: Agent, reason: str) -> bool:
        """Say whether the agent went down with Docker (stopping, or away); note it if so."""
        with self._lock:
            away = self._bring_up_due
        if not away and self._runtime.reachable():
            return False
        self._docker_away()
        logger.info("agent %s: %s as Docker went away; starting it when Docker is back",
                    agent.id, reason)
        self._store.update(agent.id, last_error=f"{reason} (Docker went away)")
        return True

    def _docker_away(self) -> None:
        """Note that Docker takes no connection: the pass that reaches it brings agents up."""
        with self._lock:
            noted, self._bring_up_due = self._bring_up_due, True
            self._away += 1
        if not noted:
            logger.warning("Docker went away; agents meant to run are started when it is back")

    def _schedule_restart(self, agent: Agent, reason: str, *, probes: bool = False) -> None:
        """Restart after the policy's backoff, or mark a crash loop ``failed``."""
        with self._lock:
            if agent.id in self._due:
                return
            delay = self._policy.next_delay(agent.id)
            if delay is not None:
                self._due[agent.id] = (self._clock() + delay, reason, probes)
        if delay is None:
            verdict = self._policy.verdict(reason)
            logger.warning("agent %s: %s", agent.id, verdict)
            if agent.status is AgentStatus.RUNNING:
                self._agents.stop(agent.id)
            self._agents.record_failure(agent.id, verdict, give_up=True)
            self._emit(agent.id, EventType.AGENT_FAILED, {"reason": verdict})
            self._policy.forget(agent.id)
            return
        logger.info("agent %s: %s; restarting in %.1fs", agent.id, reason, delay)
        self._store.update(agent.id, last_error=reason)

    # -- control ----------------------------------------------------------------------

    def _control_loop(self) -> None:
        next_reconcile = self._clock() + self._reconcile_interval
        next_janitor = self._clock()
        while not self._stop.wait(TICK):
            self.restart_due()
            now = self._clock()
            if now >= next_janitor:
                self._janitor.run_once()
                next_janitor = now + Janitor.INTERVAL
            if now >= next_reconcile:
                try:
                    self.reconcile(wait=False)  # NOTE: skipped while the events loop runs one
                except Unavailable as ex:  # NOTE: the journal's sweeps go on meanwhile
                    logger.warning("reconcile: %s", ex.message)
                next_reconcile = self._clock() + self._reconcile_interval

    def restart_due(self) -> None:
        """Make the restarts whose backoff is over (dropping those no longer needed).

        None while Docker is away: the pass that reaches it again starts those agents.
        """
        now = self._clock()
        with self._lock:
            if self._bring_up_due:
                return
            due = [agent_id for agent_id, (when, _, _) in self._due.items() if when <= now]
        for agent_id in due:
            try:
                self._restart(agent_id)
            except AgentNotFound:
                self._forget(agent_id)

    def _restart(self, agent_id: str) -> None:
        """Restart one agent whose backoff is over, unless that is no longer wanted."""
        with self._lock:
            entry = self._due.get(agent_id)
        if entry is None:
            return  # NOTE: forgotten meanwhile (the agent was removed)
        _, reason, probes = entry
        agent = self._agents.get(agent_id)
        running = agent.status is AgentStatus.RUNNING
        if (agent.desired is not Desired.RUNNING or agent.status is AgentStatus.PAUSED
                or running and not (probes and self._unhealthy(agent))):
            logger.info("agent %s: restart dropped: it is %s (desired %s)", agent_id,
                        agent.status.value, agent.desired.value)
            with self._lock:
                self._due.pop(agent_id, None)
            return
        with self._lock:  # NOTE: counted before it runs, so a quick crash sees the attempt
            self._policy.attempted(agent_id)
            self._due.pop(agent_id, None)
        try:
            if running:
                self._agents.restart(agent_id)
            else:
                self._agents.start(agent_id)
        except AgentNotFound:
            raise
        except MountRefused as ex:
            self._refused(agent_id, ex)
            return
        except (AgentainerError, ContainerGone) as ex:
            if isinstance(ex, Unavailable) and not self._runtime.reachable():
                self._docker_away()  # NOTE: started with the others when Docker is back
                return
            message = ex.message if isinstance(ex, AgentainerError) else str(ex)
            self._crashed(self._agents.get(agent_id), f"restart failed: {message}")
            return
        self._watch.started(agent)  # NOTE: clears its failures too (as its start event will)
        self._store.count_restart(agent_id)
        self._emit(agent_id, EventType.AGENT_RESTARTED, {"reason": reason})
        logger.info("agent %s: restarted (%s)", agent_id, reason)

    def _refused(self, agent_id: str, ex: MountRefused) -> None:
        """Mark ``failed`` at once an agent whose mounts the policy refuses at a start.

        NOTE: no backoff: retrying cannot help until someone changes the host or the settings.
        """
        reason = f"start refused: {ex.message}"
        logger.warning("agent %s: %s", agent_id, reason)
        try:
            running = self._agents.get(agent_id).status is AgentStatus.RUNNING
        except AgentNotFound:
            return  # NOTE: removed meanwhile
        if running:
            self._agents.stop(agent_id)  # NOTE: a refused restart left it running
        self._agents.record_failure(agent_id, reason, give_up=True)
        self._emit(agent_id, EventType.AGENT_FAILED, {"reason": reason})
        self._policy.forget(agent_id)

    def _unhealthy(self, agent: Agent) -> bool:
        """Say whether the agent's probes have failed too often since it last started."""
        # NOTE: failures in the start grace are not counted, so a restart scheduled by a
        # probe that failed during another restart finds too few and is dropped.
        record = self._health.get(agent.id)
        check = agent.spec.health_check
        if record is None or check is None:
            return False
        return record["failures"] >= check.retries

    def bring_up(self) -> None:
        """Start every agent whose user wants it running (after a stack, host or Docker
        restart). Starts made here are not restart attempts: they cost no crash-loop budget.

        Raises:
            Unavailable: Docker (or Redis) cannot be reached; the agents left are not tried.
        """
        for agent in self._store.all():
            if agent.desired is Desired.RUNNING:
                try:
                    status = self._agents.get(agent.id).status
                    if status not in (AgentStatus.RUNNING, AgentStatus.PAUSED):
                        logger.info("agent %s: desired running; starting it", agent.id)
                        self._agents.start(agent.id)
                except AgentNotFound:
                    continue  # NOTE: removed meanwhile
                except MountRefused as ex:
                    self._refused(agent.id, ex)
                except Unavailable:
                    raise
                except AgentainerError as ex:
                    logger.warning("agent %s: cannot bring it up: %s", agent.id, ex.message)

    def reconcile(self, *, wait: bool = True) -> bool:
        """Record Docker's view of every agent, act on crashes missed, remove orphans.

        Args:
            wait: False to skip the pass (returning False) while another one runs.
        """
        if not self._reconciling.acquire(blocking=wait):
            return False
        try:
            with self._lock:
                bring_up = self._bring_up_due
            if bring_up:
                self._back()
            self._reconcile()
        finally:
            self._reconciling.release()
        return True

    def _back(self) -> None:
        """Start the agents meant to run, now that Docker can be reached (again).

        Raises:
            Unavailable: Docker still takes no new connection (it may answer on an open one
                while it stops), or went away again meanwhile.
        """
        with self._lock:
            away = self._away
        if not self._runtime.reachable():
            raise Unavailable("Docker is unreachable; agents meant to run are started when "
                              "it is back")
        logger.info("Docker is reachable; starting the agents meant to run")
        self.bring_up()
        with self._lock:  # NOTE: unless it went away again meanwhile
            self._bring_up_due = self._away != away

    def _reconcile(self) -> None:
        # NOTE: containers before agents, so a container whose deploy records its agent
        # meanwhile is seen with its agent; ORPHAN_GRACE covers a deploy still in progress.
        containers = self._runtime.containers_of_instance(self._instance)
        agents = self._store.all()
        known = {agent.id for agent in agents}
        for agent in agents:
            try:
                self._reconcile_one(agent.id)
            except AgentNotFound:
                self._forget(agent.id)
        with self._lock:
            gone, self._seen = self._seen - known, known
        for agent_id in gone:  # NOTE: removed since the last pass (IDs are never reused)
            self._forget(agent_id)
        now = self._wall_clock()
        for container_id, (agent_id, created) in containers.items():
            if agent_id in known or now - created < ORPHAN_GRACE:
                continue
            logger.info("container %s: orphan of agent %s; removing it", container_id[:12],
                        agent_id or "?")
            self._runtime.remove(container_id)
            if agent_id:
                self._forget(agent_id)

    def _reconcile_one(self, agent_id: str) -> None:
        current = self._agents.reconcile(agent_id)
        if current is None or current.desired is not Desired.RUNNING:
            return
        with self._lock:
            pending = agent_id in self._due
        # NOTE: paused behind our back (docker pause) is recorded above, not a crash.
        if not pending and current.status not in (AgentStatus.RUNNING, AgentStatus.PAUSED):
            self._crashed(current, self._exit_reason(current))

    def _exit_reason(self, agent: Agent) -> str:
        """Say why the agent's container is down, as its state shows."""
        if not agent.container_id:
            return "found stopped (no container)"
        try:
            state = self._runtime.inspect(agent.container_id)
        except ContainerGone:
            return "its container was removed"
        if state.oom_killed:
            return "killed: out of memory"
        if state.error:
            return f"could not start: {state.error}"
        return f"exited with code {state.exit_code}"

    def _forget(self, agent_id: str) -> None:
        """Drop what this process keeps about an agent that no longer exists.

        Its health results and metrics history went with its record (store.delete), and
        their writes check that the record exists, so they are not recreated.
        """
        with self._lock:
            self._due.pop(agent_id, None)
            self._oom.pop(agent_id, None)
            self._seen.discard(agent_id)
        self._policy.forget(agent_id)
        self._watch.forget(agent_id)

    # -- probes and metrics -------------------------------------------------------------

    def _probes_loop(self) -> None:
        while not self._stop.wait(TICK):
            self._watch.tick(self._store.all())

    def _unhealthy_agent(self, agent: Agent, failures: int, result: ProbeResult) -> None:
        """Restart an auto-restart agent whose probes failed too often; else report it."""
        reason = f"health probe failed {failures} times: {result.message}"
        if agent.spec.auto_restart:
            self._schedule_restart(agent, reason, probes=True)
        elif agent.spec.health_check and failures == agent.spec.health_check.retries:
            logger.info("agent %s: unhealthy: %s (no auto-restart)", agent.id, reason)

    def _metrics_loop(self) -> None:
        while not self._stop.wait(self._metrics_interval):
            for agent in self._store.all():
                if agent.status is AgentStatus.RUNNING and agent.container_id:
                    self._samplers.submit(agent.id, functools.partial(self._sample, agent))

    # -- the idle rule ------------------------------------------------------------------

    def _idle_loop(self) -> None:
        while not self._stop.wait(IDLE_TICK):
            self.idle_pass()

    def idle_pass(self) -> None:
        """Stop or pause the running agents idle for their ``idle_timeout``.

        An agent marked ``pending`` and not being stopped is one whose monitor died
        between the mark and the stop: it is stopped now. An idle agent with requests in
        its queue is one whose wake failed (the proxy's wake gave up on a busy lock, or
        died): it is woken now.
        """
        for agent in self._store.all():
            timeout = agent.spec.idle_timeout
            if agent.idle in (Idle.STOPPED, Idle.PAUSED) and self._journal.queue_length(agent.id):
                self._idlers.submit(agent.id, functools.partial(self._agents.wake, agent.id))
                continue
            if not timeout or agent.status is not AgentStatus.RUNNING:
                continue
            if agent.idle is Idle.PENDING or (agent.idle is Idle.NONE
                                              and self._journal.mark_idle(agent.id, timeout)):
                self._idlers.submit(agent.id, functools.partial(
                    self._agents.go_idle, agent.id, agent.spec.idle_action))

    def _sample(self, agent: Agent) -> None:
        try:
            sample = self._runtime.stats(agent.container)
        except (AgentainerError, ContainerGone):
            return
        self._history.record(agent.id, sample)
