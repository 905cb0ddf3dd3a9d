"""The monitor's decisions, over the real AgentService with an in-memory store and runtime."""

import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace

import pytest

from tests.helpers import wait_for

from agentainer.agents.mounts import MountPolicy, MountSpec, VolumeInfo
from agentainer.agents.observations import ProbeResult
from agentainer.agents.runtime import ContainerGone, ContainerState, RuntimeEvent
from agentainer.agents.service import AgentService, Networks
from agentainer.agents.spec import Agent, AgentSpec, HealthCheck, Volume, new_agent_id, now
from agentainer.errors import AgentainerError, AgentNotFound, InvalidInput, Unavailable
from agentainer.monitor.lanes import Lanes
from agentainer.monitor.reconcile import ORPHAN_GRACE, Monitor, MonitorSettings
from agentainer.monitor.restarts import RestartPolicy
from agentainer.statuses import AgentStatus, Desired, Idle, IdleAction

S = AgentStatus
WALL = 1_700_000_000.0


class Clock:
    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class Box:
    """A fake container."""

    agent_id: str
    status: AgentStatus
    created: float
    exit_code: int = 0
    oom_killed: bool = False


class FakeRuntime:
    """A Runtime with containers in a dict; ``start_error`` makes every start fail.

    ``up`` False is a stopping or stopped daemon: no new connection (``reachable``, ``events``)
    while calls on open ones (``inspect``) are still answered; ``streams`` are the event
    streams to hand out, one per ``events`` call. Every container runs at 10.0.0.2.
    """

    ADDRESS = "10.0.0.2"

    def __init__(self) -> None:
        self.boxes: dict[str, Box] = {}
        self.starts: list[str] = []
        self.start_error: Exception | None = None
        self.on_list = lambda: None
        self.up = True
        self.streams: list = []

    def ping(self) -> bool:
        return True

    def reachable(self, *, timeout: float = 5.0) -> bool:
        return self.up

    def check(self, spec: AgentSpec) -> None:
        pass

    def pull(self, image: str) -> None:
        pass

    def exposed_ports(self, image: str) -> list[int]:
        return [8000]

    def ensure_network(self, name: str, *, internal: bool) -> str:
        return name

    def network_gateway(self, name: str) -> str:
        return "10.0.0.1"

    def ensure_volume(self, name: str, agent_id: str) -> VolumeInfo:
        return VolumeInfo(name, agent_id, "local")

    def remove_volume(self, name: str, agent_id: str) -> bool:
        return True

    def create(self, agent: Agent, *, network: str, env: dict[str, str],
               mounts: list[MountSpec], instance: str) -> str:
        container_id = f"c-{agent.id}"
        self.boxes[container_id] = Box(agent.id, S.CREATED, WALL)
        return container_id

    def start(self, container_id: str) -> None:
        self.starts.append(container_id)
        if self.start_error:
            raise self.start_error
        self.boxes[container_id].status = S.RUNNING

    def stop(self, container_id: str, *, timeout: float) -> None:
        self.boxes[container_id].status = S.STOPPED

    def restart(self, container_id: str, *, timeout: float) -> None:
        self.stop(container_id, timeout=timeout)
        self.start(container_id)

    def pause(self, container_id: str) -> None:
        self.boxes[container_id].status = S.PAUSED

    def resume(self, container_id: str) -> None:
        self.boxes[container_id].status = S.RUNNING

    def remove(self, container_id: str) -> None:
        self.boxes.pop(container_id, None)

    def inspect(self, container_id: str) -> ContainerState:
        box = self.boxes.get(container_id)
        if box is None:
            raise ContainerGone(container_id)
        ip = self.ADDRESS if box.status is S.RUNNING else ""
        return ContainerState(box.status, box.exit_code, box.oom_killed, "", ip)

    def mounts(self, container_id: str) -> list[MountSpec]:
        return []

    def containers_of(self, agent_id: str) -> list[str]:
        return [cid for cid, box in self.boxes.items() if box.agent_id == agent_id]

    def containers_of_instance(self, instance: str) -> dict[str, tuple[str, float]]:
        found = {cid: (box.agent_id, box.created) for cid, box in self.boxes.items()}
        self.on_list()
        return found

    def statuses(self) -> dict[str, AgentStatus]:
        return {box.agent_id: box.status for box in self.boxes.values()}

    def addresses(self, networks, instance: str) -> dict[str, str]:
        return {self.ADDRESS: box.agent_id for box in self.boxes.values()
                if box.status is S.RUNNING}

    def events(self, instance: str, *, since: float | None = None):
        if not self.up:
            raise Unavailable("Docker is unreachable")
        return self.streams.pop(0)

    def logs(self, container_id: str, *, follow: bool, tail: int | None,
             since: float | None, timestamps: bool):
        return iter(())

    def stats(self, container_id: str) -> dict:
        return {"timestamp": int(WALL * 1000), "cpu_percent": 0.0}


class FakeStore:
    """Agent records in a dict; ``ghosts`` are listed but gone (removed meanwhile)."""

    def __init__(self) -> None:
        self.agents: dict[str, Agent] = {}
        self.routes: dict[str, str] = {}
        self.ghosts: list[Agent] = []

    def get(self, agent_id: str) -> Agent:
        if agent_id not in self.agents:
            raise AgentNotFound(agent_id)
        return self.agents[agent_id]

    def resolve(self, ref: str) -> str:
        return self.get(ref).id

    def all(self) -> list[Agent]:
        return [*self.ghosts, *self.agents.values()]

    def update(self, agent_id: str, *, status=None, desired=None, container_id=None,
               route=None, last_error=None, idle=None, active=False) -> bool:
        if agent_id not in self.agents:
            return False
        changes = {"status": status, "desired": desired, "container_id": container_id,
                   "last_error": last_error, "idle": idle}
        self.agents[agent_id] = replace(self.agents[agent_id], **{
            key: value for key, value in changes.items() if value is not None})
        if route is not None:
            self.routes[agent_id] = route
        return True

    def routing(self, agent_id: str) -> tuple[AgentStatus, str]:
        return self.get(agent_id).status, self.routes.get(agent_id, "")

    def count_restart(self, agent_id: str) -> None:
        self.update(agent_id)
        self.agents[agent_id] = replace(self.agents[agent_id],
                                        restarts=self.agents[agent_id].restarts + 1)

    def instance(self) -> str:
        return "test"

    @contextmanager
    def lock(self, agent_id: str, *, wait: bool = True):
        yield True

    def claim_wake(self, agent_id: str, ttl: float) -> bool:
        return True

    def end_wake(self, agent_id: str) -> None:
        pass


class FakeHealth:
    """HealthRecords in memory, with the same counting rules."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.records: dict[str, dict] = {}

    def record(self, agent_id: str, result: ProbeResult, *, counted: bool = True) -> int:
        if agent_id not in self.store.agents:
            return 0
        record = self.records.setdefault(agent_id, {"failures": 0})
        if result.healthy:
            record["failures"] = 0
        elif counted:
            record["failures"] += 1
        record["healthy"] = result.healthy
        return record["failures"]

    def get(self, agent_id: str) -> dict | None:
        return self.records.get(agent_id)

    def reset(self, agent_id: str) -> None:
        self.records.pop(agent_id, None)


class FakeHistory:
    """No method is called: the tests take no samples, and a removed agent's history
    goes with its record (store.delete)."""


class FakeJanitor:
    def __init__(self) -> None:
        self.runs = 0

    def run_once(self) -> None:
        self.runs += 1


class FakeJournal:
    """The idle decision, scripted: ``idle`` holds the agents found idle (and marked)."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.idle: set[str] = set()

    def mark_idle(self, agent_id: str, idle_timeout: float) -> bool:
        if agent_id not in self.idle:
            return False
        self.store.update(agent_id, idle=Idle.PENDING)
        return True


class World:
    """A monitor over fakes, with a hand-moved clock and scripted probe results."""

    def __init__(self, *, prober=None, mounts: MountPolicy | None = None) -> None:
        self.clock, self.wall = Clock(), Clock(WALL)
        self.store, self.runtime = FakeStore(), FakeRuntime()
        self.health, self.history = FakeHealth(self.store), FakeHistory()
        self.janitor = FakeJanitor()
        self.journal = FakeJournal(self.store)
        self.events: list[tuple] = []  # NOTE: the agent.idle and agent.woken hooks' calls
        self.agents = AgentService(self.store, self.runtime,
                                   purge_requests=lambda agent_id: None,
                                   networks=Networks("net", "internal", 8080), mounts=mounts,
                                   on_running=lambda agent_id: None,
                                   on_idle=lambda *call: self.events.append(("idle", *call)),
                                   on_woken=lambda *call: self.events.append(("woken", *call)))
        self.policy = RestartPolicy(base=1.0, cap=60.0, limit=3, window=300.0,
                                    clock=self.clock, rand=lambda: 1.0)  # NOTE: no jitter
        self.healthy = False
        self.monitor = Monitor(
            self.agents, self.store, self.runtime, self.health, self.history, self.janitor,
            self.journal, self.policy,
            MonitorSettings(reconcile_interval=10.0, metrics_interval=10.0, clock=self.clock,
                            wall_clock=self.wall, prober=prober or self._probe))

    def _probe(self, http, route: str, check: HealthCheck) -> ProbeResult:
        return ProbeResult(self.healthy, 200 if self.healthy else 500,
                           "ok" if self.healthy else "HTTP 500")

    def add(self, *, status: AgentStatus = S.RUNNING, desired: Desired = Desired.RUNNING,
            auto_restart: bool = True, check: HealthCheck | None = None,
            age: float = 3600.0, volumes: tuple[Volume, ...] = ()) -> str:
        agent_id = new_agent_id()
        container_id = f"c-{agent_id}"
        self.runtime.boxes[container_id] = Box(agent_id, status, self.wall.now - age)
        spec = AgentSpec(name=agent_id, image="echo", auto_restart=auto_restart,
                         health_check=check, app_port=8000, volumes=volumes)
        self.store.agents[agent_id] = Agent(agent_id, spec, status, desired, container_id,
                                            now(), now())
        self.store.routes[agent_id] = "10.0.0.2:8000"
        return agent_id

    def crash(self, agent_id: str, code: int = 1) -> None:
        self.runtime.boxes[f"c-{agent_id}"].status = S.STOPPED
        self.monitor.on_event(RuntimeEvent("die", agent_id, str(code)))

    def stop_docker(self, *agent_ids: str) -> None:
        """Stop the daemon as dockerd does: its socket closes, then its containers stop."""
        self.runtime.up = False
        for agent_id in agent_ids:
            self.crash(agent_id, 0)

    def run_for(self, seconds: float, step: float = 0.25) -> None:
        for _ in range(int(seconds / step)):
            self.clock.now += step
            self.monitor.restart_due()

    def agent(self, agent_id: str) -> Agent:
        return self.store.agents[agent_id]


@pytest.fixture
def world() -> World:
    return World()


def test_failed_starts_back_off_and_end_failed_with_the_start_error(world):
    agent_id = world.add()
    world.runtime.start_error = InvalidInput("bind source path does not exist: /srv/x")
    times = []
    original = world.runtime.start

    def timed_start(container_id: str) -> None:
        times.append(world.clock.now)
        original(container_id)

    world.runtime.start = timed_start
    world.crash(agent_id, 3)
    world.run_for(30)
    assert [round(b - a) for a, b in zip(times, times[1:])] == [2, 4]  # then the limit (3)
    agent = world.agent(agent_id)
    assert agent.status is S.FAILED and agent.desired is Desired.STOPPED
    assert "crash loop: 3 restart attempts" in agent.last_error
    assert "bind source path does not exist" in agent.last_error
    assert agent.restarts == 0


def swapped_world(tmp_path) -> tuple[World, str]:
    """An agent whose bind source, a symlink, now leads to /etc."""
    world = World(mounts=MountPolicy([tmp_path], tmp_path / "agentainer",
                                     docker_root=lambda: tmp_path / "docker"))
    link = tmp_path / "data"
    link.symlink_to("/etc")
    return world, world.add(volumes=(Volume("/data", host_path=str(link)),))


def assert_failed_by_the_policy(world: World, agent_id: str) -> None:
    agent = world.agent(agent_id)
    assert agent.status is S.FAILED and agent.desired is Desired.STOPPED
    assert agent.last_error.startswith("start refused: host path") and "/etc" in agent.last_error
    assert world.runtime.starts == []


def test_a_restart_the_mount_policy_refuses_fails_at_once_without_backoff(tmp_path):
    world, agent_id = swapped_world(tmp_path)
    world.crash(agent_id)
    world.run_for(1.5)  # NOTE: the first attempt is due after 1 s
    assert_failed_by_the_policy(world, agent_id)
    world.run_for(30)
    assert world.runtime.starts == [] and agent_id not in world.monitor._due


def test_a_bring_up_the_mount_policy_refuses_marks_the_agent_failed(tmp_path):
    world, agent_id = swapped_world(tmp_path)
    world.runtime.boxes[f"c-{agent_id}"].status = S.STOPPED
    world.monitor.bring_up()
    assert_failed_by_the_policy(world, agent_id)


def test_a_crash_during_the_start_sees_the_attempt_counted(world):
    agent_id = world.add()
    original = world.runtime.start

    def start_then_crash(container_id: str) -> None:
        original(container_id)
        world.crash(agent_id)  # NOTE: handled before the monitor's start returns

    world.crash(agent_id)
    world.runtime.start = start_then_crash
    world.run_for(1)
    when, _, _ = world.monitor._due[agent_id]
    assert when - world.clock.now == pytest.approx(2.0, abs=0.3)  # second attempt: 2 s


@pytest.mark.parametrize("auto_restart", [True, False])
def test_paused_behind_our_back_is_recorded_not_restarted(world, auto_restart):
    agent_id = world.add(auto_restart=auto_restart)
    world.runtime.boxes[f"c-{agent_id}"].status = S.PAUSED
    world.monitor.reconcile()
    world.monitor.on_event(RuntimeEvent("pause", agent_id))
    world.run_for(10)
    agent = world.agent(agent_id)
    assert agent.status is S.PAUSED and agent.desired is Desired.RUNNING
    assert agent.last_error is None and world.runtime.starts == []
    world.runtime.boxes[f"c-{agent_id}"].status = S.RUNNING
    world.monitor.on_event(RuntimeEvent("unpause", agent_id))
    assert world.agent(agent_id).status is S.RUNNING


def test_a_due_restart_is_dropped_when_the_user_started_the_agent(world):
    agent_id = world.add()
    world.crash(agent_id)
    world.agents.start(agent_id)
    world.run_for(5)
    assert world.runtime.starts == [f"c-{agent_id}"]  # the user's start only
    assert world.agent(agent_id).restarts == 0 and agent_id not in world.monitor._due


def test_a_due_restart_is_dropped_when_the_user_stopped_the_agent(world):
    agent_id = world.add()
    world.crash(agent_id)
    world.store.update(agent_id, desired=Desired.STOPPED)  # as 'stop' on a stopped agent
    world.run_for(5)
    assert world.runtime.starts == [] and world.agent(agent_id).status is S.STOPPED


def test_a_due_restart_is_dropped_when_the_agent_was_paused_meanwhile(world):
    agent_id = world.add()
    world.crash(agent_id)
    world.runtime.boxes[f"c-{agent_id}"].status = S.PAUSED  # docker start, docker pause
    world.run_for(30)
    assert world.runtime.starts == [] and world.agent(agent_id).status is not S.FAILED


def test_a_restart_for_failed_probes_happens_while_still_unhealthy(world):
    agent_id = world.add(check=HealthCheck(interval=1.0, retries=2))
    world.monitor._watch.probe(world.agent(agent_id))
    world.monitor._watch.probe(world.agent(agent_id))
    assert "health probe failed 2 times" in world.agent(agent_id).last_error
    world.run_for(2)
    assert world.agent(agent_id).restarts == 1
    assert agent_id not in world.health.records  # reset after the restart


def test_a_restart_for_failed_probes_is_dropped_once_the_agent_started_again(world):
    agent_id = world.add(check=HealthCheck(interval=1.0, retries=2))
    world.monitor._watch.probe(world.agent(agent_id))
    world.monitor._watch.probe(world.agent(agent_id))
    world.monitor.on_event(RuntimeEvent("start", agent_id))  # restarted meanwhile
    world.monitor._watch.probe(world.agent(agent_id))  # still booting: not counted
    world.run_for(1.5)
    assert world.agent(agent_id).restarts == 0 and world.runtime.starts == []


def test_young_unknown_containers_are_left_alone_old_ones_removed(world):
    world.runtime.boxes["young"] = Box("agent-000000000001", S.CREATED, WALL - 5)
    world.runtime.boxes["old"] = Box("agent-000000000002", S.CREATED,
                                     WALL - ORPHAN_GRACE - 1)
    world.monitor.reconcile()
    assert set(world.runtime.boxes) == {"young"}


def test_a_container_recorded_while_reconciling_is_not_an_orphan(world):
    agent_id = world.add()
    record = world.store.agents.pop(agent_id)  # NOTE: deploy has created, not yet recorded

    def deploy_records_it() -> None:
        world.store.agents[agent_id] = record

    world.runtime.on_list = deploy_records_it
    world.monitor.reconcile()
    assert f"c-{agent_id}" in world.runtime.boxes


def test_an_agent_removed_meanwhile_does_not_cost_the_others_their_restart(world):
    first, second = world.add(), world.add()
    world.crash(first)
    world.crash(second)
    del world.store.agents[first]
    world.run_for(2)
    assert world.runtime.starts == [f"c-{second}"]
    assert first not in world.monitor._due


def test_an_agent_removed_meanwhile_does_not_abort_reconciliation(world):
    ghost, down = world.add(), world.add(auto_restart=False)
    world.store.ghosts.append(world.store.agents.pop(ghost))
    world.runtime.boxes[f"c-{down}"].status = S.STOPPED
    world.runtime.boxes["orphan"] = Box("agent-000000000003", S.STOPPED, WALL - 3600)
    world.monitor.reconcile()
    assert world.agent(down).status is S.STOPPED and world.agent(down).last_error
    assert "orphan" not in world.runtime.boxes


@pytest.mark.parametrize(("oom", "code", "reason"), [
    (False, 3, "exited with code 3"), (True, 137, "killed: out of memory")])
def test_drift_found_by_reconciliation_says_why(world, oom, code, reason):
    agent_id = world.add(auto_restart=False)
    box = world.runtime.boxes[f"c-{agent_id}"]
    box.status, box.exit_code, box.oom_killed = S.STOPPED, code, oom
    world.monitor.reconcile()
    assert world.agent(agent_id).last_error == reason
    assert world.agent(agent_id).desired is Desired.STOPPED


def test_a_removed_agent_is_forgotten(world):
    agent_id = world.add(check=HealthCheck(interval=1.0, retries=3))
    world.monitor._watch.started(world.agent(agent_id))
    world.crash(agent_id)
    world.monitor.on_event(RuntimeEvent("oom", agent_id))
    del world.store.agents[agent_id]
    world.monitor.on_event(RuntimeEvent("destroy", agent_id))
    assert agent_id not in world.monitor._due and agent_id not in world.monitor._oom
    assert agent_id not in world.policy._history
    assert agent_id not in world.monitor._watch._grace


def test_an_agent_gone_since_the_last_pass_is_forgotten(world):
    agent_id = world.add(check=HealthCheck(interval=1.0, retries=3))
    world.monitor.reconcile()
    world.monitor._watch.started(world.agent(agent_id))
    world.policy.attempted(agent_id)
    del world.store.agents[agent_id]
    del world.runtime.boxes[f"c-{agent_id}"]
    world.monitor.reconcile()
    assert agent_id not in world.policy._history
    assert agent_id not in world.monitor._watch._grace
    assert agent_id not in world.monitor._seen


def test_the_periodic_pass_skips_while_another_runs_and_the_control_loop_goes_on(world):
    agent_id = world.add()
    world.crash(agent_id)
    listed = []
    world.runtime.on_list = lambda: listed.append(world.clock.now)
    thread = threading.Thread(target=world.monitor._control_loop)
    with world.monitor._reconciling:  # NOTE: as the events loop's pass after a reconnect
        thread.start()
        wait_for(lambda: world.janitor.runs >= 1, timeout=5, message="the first sweep")
        world.clock.now += 30  # the restart, a sweep and the periodic pass are due
        wait_for(lambda: world.janitor.runs >= 2, timeout=5, message="the second sweep")
        world.clock.now += 2   # past the periodic pass: another sweep is due
        wait_for(lambda: world.janitor.runs >= 3, timeout=5, message="a sweep after the pass")
        assert world.runtime.starts == [f"c-{agent_id}"] and listed == []
    world.monitor.stop()
    thread.join(5)
    assert world.monitor.reconcile(wait=False) and listed


@pytest.mark.parametrize(("between", "reason"), [
    (lambda w, aid: None, "killed: out of memory"),
    (lambda w, aid: setattr(w.clock, "now", w.clock.now + 60), "exited with code 1"),
    (lambda w, aid: w.monitor.on_event(RuntimeEvent("start", aid)),
     "exited with code 1")])
def test_an_oom_event_labels_only_the_death_that_follows_it(world, between, reason):
    agent_id = world.add(auto_restart=False)
    world.monitor.on_event(RuntimeEvent("oom", agent_id))
    between(world, agent_id)
    world.crash(agent_id)
    assert world.agent(agent_id).last_error == reason


def test_probe_failures_do_not_count_during_the_start_grace(world):
    check = HealthCheck(interval=1.0, retries=2)
    agent_id = world.add(check=check)
    watch = world.monitor._watch
    watch.started(world.agent(agent_id))
    for _ in range(3):  # NOTE: the app still boots: 0.5 s, 1 s, 1.5 s < interval x retries
        world.clock.now += 0.5
        watch.probe(world.agent(agent_id))
    assert world.health.records[agent_id]["failures"] == 0
    assert agent_id not in world.monitor._due
    world.clock.now += 1.0
    watch.probe(world.agent(agent_id))
    watch.probe(world.agent(agent_id))
    assert world.health.records[agent_id]["failures"] == 2
    assert agent_id in world.monitor._due


def test_a_start_event_begins_the_grace_again(world):
    agent_id = world.add(check=HealthCheck(interval=1.0, retries=2))
    world.monitor.on_event(RuntimeEvent("start", agent_id))
    world.clock.now += 1.0
    world.monitor._watch.probe(world.agent(agent_id))
    assert world.health.records[agent_id]["failures"] == 0


def test_a_start_by_the_user_after_a_failure_streak_begins_a_new_count(world):
    agent_id = world.add(check=HealthCheck(interval=1.0, retries=2))
    watch = world.monitor._watch
    world.clock.now += 10  # NOTE: long past the start grace
    watch.probe(world.agent(agent_id))
    watch.probe(world.agent(agent_id))
    world.store.update(agent_id, desired=Desired.STOPPED)  # the user stops it...
    world.run_for(5)
    assert world.health.records[agent_id]["failures"] == 2 and not world.runtime.starts
    world.store.update(agent_id, desired=Desired.RUNNING)  # ...and starts it again
    world.monitor.on_event(RuntimeEvent("start", agent_id))
    world.clock.now += 0.5
    watch.probe(world.agent(agent_id))  # still booting
    assert agent_id not in world.monitor._due
    world.clock.now += 2.0  # past the grace: a new streak of two is needed
    watch.probe(world.agent(agent_id))
    assert agent_id not in world.monitor._due
    watch.probe(world.agent(agent_id))
    assert agent_id in world.monitor._due


def test_a_failure_in_the_start_grace_never_reports_unhealthy(world):
    agent_id = world.add(check=HealthCheck(interval=1.0, retries=2))
    watch = world.monitor._watch
    watch.started(world.agent(agent_id))
    world.health.records[agent_id] = {"failures": 2, "healthy": False}  # a late write
    watch.probe(world.agent(agent_id))
    assert agent_id not in world.monitor._due


def test_first_sight_of_a_running_agent_begins_its_grace_and_a_new_count(world):
    agent_id = world.add(check=HealthCheck(interval=1.0, retries=2))
    world.health.records[agent_id] = {"failures": 5, "healthy": False}  # e.g. bring_up
    world.monitor._watch.tick(world.store.all())
    assert agent_id not in world.health.records
    world.health.records[agent_id] = {"failures": 1, "healthy": False}
    world.monitor._watch.tick(world.store.all())  # NOTE: seen before: nothing cleared
    assert world.health.records[agent_id]["failures"] == 1


def test_the_start_grace_ends_at_the_first_healthy_probe(world):
    agent_id = world.add(check=HealthCheck(interval=10.0, retries=3))
    watch = world.monitor._watch
    watch.started(world.agent(agent_id))
    world.healthy = True
    watch.probe(world.agent(agent_id))
    world.healthy = False
    watch.probe(world.agent(agent_id))
    assert world.health.records[agent_id]["failures"] == 1


def test_probes_are_due_per_agent_and_one_slow_agent_delays_no_other():
    release, probed = threading.Event(), []

    def prober(http, route: str, check: HealthCheck) -> ProbeResult:
        if check.interval == 5.0:
            release.wait(10)
        probed.append(check.interval)
        return ProbeResult(True, 200, "ok")

    world = World(prober=prober)
    world.add(check=HealthCheck(interval=1.0, retries=3))
    world.add(check=HealthCheck(interval=5.0, retries=3))
    world.monitor._watch.tick(world.store.all())  # NOTE: first sight: due one interval on
    for expected in (1, 2, 3):
        world.clock.now += 1.0
        world.monitor._watch.tick(world.store.all())
        wait_for(lambda: probed.count(1.0) == expected, timeout=5, message="the fast probe")
    world.clock.now += 5.0
    world.monitor._watch.tick(world.store.all())  # the slow one is due now and hangs
    wait_for(lambda: probed.count(1.0) == 4, timeout=5, message="the fast probe")
    world.clock.now += 1.0
    world.monitor._watch.tick(world.store.all())
    wait_for(lambda: probed.count(1.0) == 5, timeout=5, message="the fast probe")
    assert 5.0 not in probed
    release.set()
    wait_for(lambda: 5.0 in probed, timeout=5, message="the slow probe")
    world.monitor._watch.shutdown()


def test_a_loop_that_ran_well_for_a_while_retries_after_one_second_again(world, caplog):
    calls = []

    def events_loop() -> None:
        calls.append(world.clock.now)
        if len(calls) == 3:
            world.clock.now += 60  # NOTE: the stream stayed open a minute, then dropped
            world.monitor.stop()
        raise InvalidInput("the Docker event stream ended")

    world.monitor._guard(events_loop)
    assert [line.split("retrying in ")[1] for line in caplog.messages] == ["1.0s", "2.0s", "1.0s"]


def test_lanes_run_one_task_per_agent_at_a_time():
    lanes, gate, ran = Lanes(2, "test"), threading.Event(), threading.Event()
    assert lanes.submit("a", lambda: gate.wait(10))
    assert not lanes.submit("a", ran.set)
    assert lanes.submit("b", ran.set) and ran.wait(5)
    gate.set()
    lanes.shutdown()


def test_lanes_take_no_task_after_shutdown():
    lanes, ran = Lanes(1, "test"), threading.Event()
    lanes.shutdown()
    assert not lanes.submit("a", ran.set)  # NOTE: the probe loop may tick once more
    assert not ran.wait(0.2)


def test_restart_policy_doubles_caps_and_gives_up():
    clock = Clock()
    policy = RestartPolicy(base=1.0, cap=3.0, limit=3, window=60.0, clock=clock,
                           rand=lambda: 1.0)
    delays = []
    for _ in range(4):
        delays.append(policy.next_delay("a"))
        policy.attempted("a")
    assert delays == [1.0, 2.0, 3.0, None]
    clock.now = 61.0
    assert policy.next_delay("a") == 1.0  # the window moved on


def die_event(agent_id: str, code: int) -> RuntimeEvent:
    return RuntimeEvent("die", agent_id, str(code))


@pytest.mark.parametrize("auto_restart", [True, False])
def test_an_agent_stopped_with_docker_is_started_when_docker_is_back(world, auto_restart):
    agent_id = world.add(auto_restart=auto_restart)
    world.stop_docker(agent_id)
    agent = world.agent(agent_id)
    assert agent.status is S.STOPPED and agent.desired is Desired.RUNNING
    assert agent.last_error == "exited with code 0 (Docker went away)"
    world.run_for(30)
    assert world.runtime.starts == [] and agent_id not in world.monitor._due
    with pytest.raises(Unavailable):
        world.monitor.reconcile()  # NOTE: the periodic pass while Docker is away
    world.runtime.up = True
    world.monitor.reconcile()
    assert world.agent(agent_id).status is S.RUNNING
    assert world.runtime.starts == [f"c-{agent_id}"]
    assert not world.policy._history.get(agent_id)  # no crash-loop budget spent
    assert world.agent(agent_id).restarts == 0


def test_a_crash_while_docker_stays_up_is_still_a_crash_and_a_stopped_agent_stays_stopped(
        world):
    crashed, running = world.add(auto_restart=False), world.add(auto_restart=False)
    stopped = world.add(status=S.STOPPED, desired=Desired.STOPPED)
    world.crash(crashed, 3)
    assert world.agent(crashed).desired is Desired.STOPPED
    assert world.agent(crashed).last_error == "exited with code 3"
    world.stop_docker(running)
    world.runtime.up = True
    world.monitor.reconcile()
    assert world.runtime.starts == [f"c-{running}"]
    assert world.agent(crashed).status is S.STOPPED and world.agent(stopped).status is S.STOPPED
    assert world.agent(crashed).last_error == "exited with code 3"


def test_a_restart_pending_when_docker_stops_waits_for_it_and_costs_no_attempt(world):
    crashed, other = world.add(), world.add()
    world.crash(crashed)
    assert crashed in world.monitor._due
    world.stop_docker(other)
    world.run_for(30)
    assert world.runtime.starts == []
    world.runtime.up = True
    world.monitor.reconcile()
    world.run_for(30)
    assert sorted(world.runtime.starts) == sorted([f"c-{crashed}", f"c-{other}"])
    assert crashed not in world.monitor._due and not world.policy._history.get(crashed)


def test_deaths_found_after_the_stream_ended_with_docker_are_not_crashes(world):
    agent_id = world.add(auto_restart=False)
    seen = world.add(auto_restart=False)

    def stopping():  # NOTE: the socket closes, one death is streamed, the stream ends
        world.runtime.up = False
        world.runtime.boxes[f"c-{seen}"].status = S.STOPPED
        yield die_event(seen, 0)

    world.runtime.streams = [stopping(), (event for event in [])]
    with pytest.raises(AgentainerError, match="event stream ended"):
        world.monitor._events_loop()
    # NOTE: this one's death was not streamed (dockerd killed, its containers stopped as it
    # starts again): found by the catch-up pass once the stream is back
    world.runtime.boxes[f"c-{agent_id}"].status = S.STOPPED
    with pytest.raises(Unavailable):
        world.monitor._events_loop()  # NOTE: reopening while it is away
    world.runtime.up = True
    with pytest.raises(AgentainerError, match="event stream ended"):
        world.monitor._events_loop()
    for each in (agent_id, seen):
        assert world.agent(each).status is S.RUNNING
        assert world.agent(each).desired is Desired.RUNNING


def test_a_stream_that_ends_while_docker_stays_up_leaves_crashes_crashes(world):
    agent_id = world.add(auto_restart=False)
    world.runtime.streams = [(event for event in []), (event for event in [])]
    with pytest.raises(AgentainerError, match="event stream ended"):
        world.monitor._events_loop()
    world.runtime.boxes[f"c-{agent_id}"].status = S.STOPPED  # NOTE: crashed meanwhile
    with pytest.raises(AgentainerError, match="event stream ended"):
        world.monitor._events_loop()
    assert world.runtime.starts == []
    assert world.agent(agent_id).desired is Desired.STOPPED


def test_a_monitor_started_before_docker_brings_agents_up_once_it_is_reached(world):
    agent_id = world.add(status=S.STOPPED, auto_restart=False)
    world.runtime.up = False
    world.monitor._bring_up_due = True  # NOTE: as run() sets it
    world.runtime.streams = [(event for event in [])]
    with pytest.raises(Unavailable):
        world.monitor._events_loop()
    with pytest.raises(Unavailable):
        world.monitor.reconcile()
    world.runtime.up = True
    with pytest.raises(AgentainerError, match="event stream ended"):
        world.monitor._events_loop()
    assert world.agent(agent_id).status is S.RUNNING


# -- the idle rule ----------------------------------------------------------------------

def idle_agent(world: World, action: IdleAction = IdleAction.STOP) -> str:
    agent_id = world.add(auto_restart=True)
    agent = world.store.agents[agent_id]
    world.store.agents[agent_id] = replace(
        agent, spec=replace(agent.spec, idle_timeout=2.0, idle_action=action))
    return agent_id


@pytest.mark.parametrize("action, status", [(IdleAction.STOP, S.STOPPED),
                                            (IdleAction.PAUSE, S.PAUSED)])
def test_an_agent_found_idle_is_stopped_or_paused_and_marked(action, status):
    world = World()
    agent_id = idle_agent(world, action)
    world.monitor.idle_pass()
    assert world.store.agents[agent_id].status is S.RUNNING  # NOTE: not idle yet
    world.journal.idle.add(agent_id)
    world.monitor.idle_pass()
    wait_for(lambda: world.store.agents[agent_id].status is status, timeout=5,
             message=f"the agent {status}")
    agent = world.store.agents[agent_id]
    assert agent.idle == Idle(status.value) and agent.desired.value == status.value
    assert world.agents.get(agent_id).public()["idle"] is True


def test_an_idle_stopped_agent_is_not_restarted_and_a_wake_starts_it():
    world = World()
    agent_id = idle_agent(world)
    world.journal.idle.add(agent_id)
    world.monitor.idle_pass()
    wait_for(lambda: world.store.agents[agent_id].status is S.STOPPED, timeout=5,
             message="the idle stop")
    world.monitor.reconcile()
    world.clock.now += 60
    world.monitor.restart_due()
    assert world.store.agents[agent_id].status is S.STOPPED and not world.monitor._due
    assert world.agents.wake(agent_id)
    agent = world.store.agents[agent_id]
    assert agent.status is S.RUNNING and agent.desired is Desired.RUNNING
    assert agent.idle is Idle.NONE
    assert not world.agents.wake(agent_id)  # NOTE: no longer idle: nothing to wake
    assert world.events == [("idle", agent_id, IdleAction.STOP), ("woken", agent_id)]


def test_a_users_stop_clears_the_mark_and_is_not_woken():
    world = World()
    agent_id = idle_agent(world, IdleAction.PAUSE)
    world.journal.idle.add(agent_id)
    world.monitor.idle_pass()
    wait_for(lambda: world.store.agents[agent_id].status is S.PAUSED, timeout=5,
             message="the idle pause")
    world.agents.stop(agent_id)
    assert world.store.agents[agent_id].idle is Idle.NONE
    assert not world.agents.wake(agent_id)
    assert world.store.agents[agent_id].status is S.STOPPED


def test_a_wake_before_the_stop_keeps_the_agent_running():
    world = World()
    agent_id = idle_agent(world)
    world.store.update(agent_id, idle=Idle.PENDING)  # NOTE: marked; the stop not yet run
    assert world.agents.wake(agent_id)  # NOTE: running already: only the mark goes
    assert not world.agents.go_idle(agent_id, IdleAction.STOP)
    assert world.store.agents[agent_id].status is S.RUNNING
    assert world.events == []  # NOTE: it never went down
