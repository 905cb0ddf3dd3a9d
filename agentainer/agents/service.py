"""AgentService: the lifecycle state machine over the store and the runtime."""

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Literal, overload

from agentainer.agents.mounts import MountPolicy, MountSpec
from agentainer.agents.runtime import ContainerGone, ContainerState, Runtime, Stream
from agentainer.agents.spec import Agent, AgentSpec, new_agent_id, now
from agentainer.agents.store import AgentStore
from agentainer.errors import AgentainerError, InvalidTransition, NotFound
from agentainer.statuses import OPERATIONS, AgentStatus, Desired, Idle, IdleAction, observed

logger = logging.getLogger(__name__)

# NOTE: a wake whose process died mid-way frees the next one after this long at most
WAKE_TTL = 60.0
MARKED = frozenset({Idle.PENDING, Idle.STOPPED, Idle.PAUSED})


@dataclass(frozen=True)
class Networks:
    """Where agents live and how they reach the proxy."""

    egress: str
    internal: str
    proxy_port: int
    proxy_host: str = ""  # NOTE: the name agents call the proxy by; "": the gateway's address


class AgentService:
    """Deploys agents and moves them through the lifecycle table (:data:`OPERATIONS`).

    Every operation on one agent runs under that agent's Redis lock, and decides from
    what the runtime says now, not from what Redis last recorded. Whenever an agent ends up
    running, ``on_running`` is called with its ID (the replay of its queued requests);
    ``purge_requests`` drops a removed agent's queued and recorded requests (the journal's).
    ``on_idle(agent_id, action)`` is called once the idle rule stopped or paused an agent,
    ``on_woken(agent_id)`` once a request woke it (the ``agent.idle`` and ``agent.woken``
    events).
    """

    def __init__(self, store: AgentStore, runtime: Runtime, *,
                 purge_requests: Callable[[str], None], networks: Networks,
                 mounts: MountPolicy, on_running: Callable[[str], None],
                 on_idle: Callable[[str, IdleAction], object] = lambda agent_id, action: None,
                 on_woken: Callable[[str], object] = lambda agent_id: None,
                 default_app_port: int = 8000, stop_timeout: float = 10.0) -> None:
        self._store = store
        self._runtime = runtime
        self._purge_requests = purge_requests
        self._on_running = on_running
        self._on_idle = on_idle
        self._on_woken = on_woken
        self._networks = networks
        self._mounts = mounts
        self._default_app_port = default_app_port
        self._stop_timeout = stop_timeout

    # -- reading ----------------------------------------------------------------------

    def get(self, ref: str) -> Agent:
        """Return the agent named or identified by ``ref``, its status as the runtime shows it."""
        agent = self._store.get(self._store.resolve(ref))
        return replace(agent, status=self._observe(agent)[0])

    def resolve(self, ref: str) -> str:
        return self._store.resolve(ref)

    def live_metrics(self, ref: str) -> dict:
        """Return the running agent's resource use now (one runtime stats sample)."""
        agent = self.get(ref)
        if agent.status is not AgentStatus.RUNNING:
            raise InvalidTransition(f"agent {agent.name} is {agent.status.value}; live metrics "
                                    "need a running agent (see metrics/history)")
        return self._runtime.stats(agent.container)

    def list_agents(self, *, status: AgentStatus | None = None, name: str | None = None) -> list[Agent]:
        """Return every agent (oldest first), optionally filtered by status or name substring."""
        live = self._runtime.statuses()
        agents = [replace(a, status=observed(a.status, live.get(a.id)))
                  for a in self._store.all()]
        return [a for a in agents
                if (status is None or a.status is status) and (name is None or name in a.name)]

    def logs(self, ref: str, *, follow: bool = False, tail: int | None = None,
             since: float | None = None, timestamps: bool = False) -> Stream[bytes]:
        agent = self._store.get(self._store.resolve(ref))
        if not agent.container_id:
            raise NotFound(f"agent {agent.name} has no container yet", code="no_container")
        try:
            return self._runtime.logs(agent.container_id, follow=follow, tail=tail,
                                      since=since, timestamps=timestamps)
        except ContainerGone:
            raise NotFound(f"agent {agent.name}'s container is gone; 'resume' recreates it",
                           code="no_container") from None

    @overload
    def reconcile(self, agent_id: str, *, wait: Literal[True]) -> Agent: ...

    @overload
    def reconcile(self, agent_id: str, *, wait: bool = False) -> Agent | None: ...

    def reconcile(self, agent_id: str, *, wait: bool = False) -> Agent | None:
        """Record what the runtime says about the agent now; return the agent as recorded.

        Without ``wait``, skipped (None) while a lifecycle operation holds the agent:
        that operation records the outcome itself.
        """
        with self._store.lock(agent_id, wait=wait) as held:
            if not held:
                return None
            agent = self._store.get(agent_id)
            status, address = self._observe(agent)
            route = f"{address}:{agent.spec.app_port}" if address else ""
            if status is not agent.status:
                logger.info("agent %s: found %s (recorded %s)", agent_id, status.value,
                            agent.status.value)
            if status is AgentStatus.RUNNING and agent.idle in (Idle.STOPPED, Idle.PAUSED):
                # NOTE: started or unpaused behind our back: running as if woken
                agent = replace(agent, idle=Idle.NONE, desired=Desired.RUNNING)
                self._store.update(agent_id, idle=Idle.NONE, desired=Desired.RUNNING,
                                   active=True)
            self._store.update(agent_id, status=status, route=route)
        if status is AgentStatus.RUNNING and agent.status is not AgentStatus.RUNNING:
            self._on_running(agent_id)
        return replace(agent, status=status)

    def record_failure(self, agent_id: str, reason: str, *, give_up: bool) -> None:
        """Note why the agent stopped on its own; with ``give_up`` mark it ``failed``.

        Either way it stays down: its desired state becomes ``stopped``, so a later stack
        restart does not bring it back; ``start`` or ``resume`` does.
        """
        self._store.update(agent_id, status=AgentStatus.FAILED if give_up else None,
                           desired=Desired.STOPPED, last_error=reason)

    # -- deploy and remove ------------------------------------------------------------

    def deploy(self, spec: AgentSpec, *, start: bool = False, pull: bool = False) -> Agent:
        """Create the agent's container (not started unless ``start``) and record it.

        With ``pull``, the image is pulled first; a failed pull creates nothing.

        Raises:
            ImageNotFound, NotFound (image_pull_failed), InvalidInput, NameTaken, Conflict,
            Unavailable.
        """
        self._runtime.check(spec)
        if pull:
            self._runtime.pull(spec.image)
        ports = self._runtime.exposed_ports(spec.image)
        app_port = spec.app_port or (ports[0] if len(ports) == 1 else self._default_app_port)
        spec = replace(spec, app_port=app_port)
        self._check_binds(spec)  # NOTE: refuse bad paths before anything is reserved
        stamp = now()
        agent = Agent(id=new_agent_id(), spec=spec, status=AgentStatus.CREATED,
                      desired=Desired.STOPPED, container_id=None,
                      created_at=stamp, updated_at=stamp)
        self._store.reserve(agent.id, spec.name, spec.token_hashes)
        container_id = None
        try:
            self._ensure_volumes(agent)
            container_id = self._create_container(agent)
            agent = replace(agent, container_id=container_id)
            self._store.create(agent)
        except BaseException:
            self._undo_deploy(agent, container_id)
            raise
        logger.info("agent %s: deployed %s as %s", agent.id, spec.image, spec.name)
        return self.start(agent.id) if start else agent

    def _undo_deploy(self, agent: Agent, container_id: str | None) -> None:
        """Take back a failed deploy; the name is always released, whatever else fails."""
        try:
            if container_id:
                self._runtime.remove(container_id)
            for volume in agent.spec.volumes:  # NOTE: only those labelled with the new ID go
                if volume.volume:
                    self._runtime.remove_volume(volume.volume, agent.id)
        except AgentainerError as ex:  # NOTE: the monitor's orphan sweep removes leftovers
            logger.warning("agent %s: cleaning up a failed deploy: %s", agent.id, ex)
        finally:
            self._store.release(agent.id, agent.spec.name, agent.spec.token_hashes)

    def remove(self, ref: str, *, volumes: bool = False) -> tuple[Agent, list[str]]:
        """Remove the agent's containers and records; with ``volumes`` its named volumes.

        Only volumes Agentainer created for this agent (labelled with its ID) are removed.

        Returns:
            The removed agent and the named volumes that were kept: not created for this
            agent, or still used by another container.
        """
        agent_id = self._store.resolve(ref)
        with self._store.lock(agent_id):
            agent = self._store.get(agent_id)
            for container_id in {*self._runtime.containers_of(agent_id), agent.container_id}:
                if container_id:
                    self._runtime.remove(container_id)
            kept = []
            for volume in agent.spec.volumes if volumes else ():
                if volume.volume:
                    try:
                        removed = self._runtime.remove_volume(volume.volume, agent_id)
                    except AgentainerError as ex:
                        logger.warning("agent %s: volume %s kept: %s", agent_id,
                                       volume.volume, ex.message)
                        removed = False
                    if not removed:
                        kept.append(volume.volume)
            self._store.delete(agent)
            self._purge_requests(agent_id)
        logger.info("agent %s: removed", agent_id)
        return agent, kept

    # -- the lifecycle table ----------------------------------------------------------

    def start(self, ref: str) -> Agent:
        return self._transition(ref, "start", self._start)

    def stop(self, ref: str) -> Agent:
        return self._transition(ref, "stop", self._stop)

    def restart(self, ref: str) -> Agent:
        return self._transition(ref, "restart", self._restart)

    def pause(self, ref: str) -> Agent:
        return self._transition(ref, "pause", self._pause)

    def resume(self, ref: str) -> Agent:
        return self._transition(ref, "resume", self._resume)

    # -- the idle rule ------------------------------------------------------------------

    def go_idle(self, agent_id: str, action: IdleAction) -> bool:
        """Stop or pause the agent the journal marked idle (``pending``); False if the mark
        was cleared meanwhile (a request woke it, or its user acted).

        Its desired state follows (stopped or paused), so it is not restarted; its
        ``idle`` mark says why it is down.
        """
        stop = action is IdleAction.STOP
        try:
            agent = self._run(agent_id, "stop" if stop else "pause",
                              self._stop if stop else self._pause,
                              mark=Idle.STOPPED if stop else Idle.PAUSED,
                              only={Idle.PENDING})
        except AgentainerError:
            self._store.update(agent_id, idle=Idle.NONE)  # NOTE: it stays as it is
            raise
        if agent is None:
            return False
        logger.info("agent %s: idle for %.0fs; %s", agent_id, agent.spec.idle_timeout,
                    "stopped" if stop else "paused")
        # NOTE: the agent.idle event's one call site
        self._on_idle(agent_id, action)
        return True

    def wake(self, agent_id: str) -> bool:
        """Bring back an agent the idle rule stopped or paused (or is stopping): unpause
        or start it; False if it was not (another wake runs, or it is not marked idle).

        One wake at a time (``waking:{id}``), so a burst of requests starts it once; the
        requests they queued are delivered by the drain its start schedules.
        """
        if not self._store.claim_wake(agent_id, WAKE_TTL):
            return False
        down: list[AgentStatus] = []  # NOTE: empty when found running (its stop not yet run)

        def resume(agent: Agent, status: AgentStatus) -> str | None:
            down.append(status)
            return self._resume(agent, status)

        try:
            agent = self._run(agent_id, "resume", resume, mark=Idle.NONE, only=MARKED)
        finally:
            self._store.end_wake(agent_id)
        if agent is None:
            return False
        if down:
            logger.info("agent %s: woken by a request (was %s)", agent_id, down[0].value)
            # NOTE: the agent.woken event's one call site
            self._on_woken(agent_id)
        return True

    def _transition(self, ref: str, name: str,
                    action: Callable[[Agent, AgentStatus], str | None]) -> Agent:
        """Run a user's operation; it clears any idle mark (a stopped agent stays down)."""
        agent = self._run(self._store.resolve(ref), name, action, mark=Idle.NONE)
        assert agent is not None  # NOTE: only a run limited to some marks is skipped
        return agent

    def _run(self, agent_id: str, name: str, action: Callable[[Agent, AgentStatus], str | None],
             *, mark: Idle, only: Collection[Idle] | None = None) -> Agent | None:
        """Run one lifecycle operation under the agent's lock, leaving ``mark`` as its idle
        mark; with ``only``, just if its mark is one of those (None if not)."""
        operation = OPERATIONS[name]
        with self._store.lock(agent_id):
            agent = self._store.get(agent_id)
            if only is not None and agent.idle not in only:
                return None
            status, _ = self._observe(agent)
            try:
                must_act = operation.check(status)
            except ValueError as ex:
                raise InvalidTransition(f"agent {agent.name}: {ex}") from None
            container_id = agent.container_id
            if must_act:
                try:
                    container_id = action(agent, status) or container_id
                except AgentainerError as ex:
                    self._store.update(agent.id, last_error=f"{name}: {ex.message}")
                    raise
                logger.info("agent %s: %s (was %s)", agent.id, name, status.value)
                # NOTE: an operation that ran clears an earlier 'failed' verdict.
                agent = replace(agent, status=AgentStatus.STOPPED)
            agent = replace(agent, container_id=container_id)
            final, address = self._observe(agent)
            route = f"{address}:{agent.spec.app_port}" if address else ""
            running = final is AgentStatus.RUNNING
            self._store.update(agent.id, status=final, desired=operation.desired,
                               container_id=container_id, route=route, idle=mark,
                               active=running)
        if running:
            self._on_running(agent.id)
        return replace(agent, status=final, desired=operation.desired, idle=mark)

    def _start(self, agent: Agent, status: AgentStatus) -> str:
        container_id = agent.container_id
        if not container_id or not self._exists(container_id):
            container_id = self._recreate(agent)
        elif agent.spec.volumes:
            self._recheck_mounts(agent, container_id)
        self._runtime.start(container_id)
        return container_id

    def _recheck_mounts(self, agent: Agent, container_id: str) -> None:
        """Check the agent's mounts again before its existing container starts.

        APPSEC: a bind source, or a symlink on its way, may have been swapped since the
        container was created. Both the stored spec's paths (resolved anew) and the paths
        the container holds (what the runtime will mount) must still pass.

        Raises:
            MountRefused: one no longer passes; the container is not started.
        """
        self._check_binds(agent.spec)
        self._ensure_volumes(agent)
        for mount in self._runtime.mounts(container_id):
            if mount.kind == "bind":
                self._mounts.check(mount.source)

    def _check_binds(self, spec: AgentSpec) -> None:
        for volume in spec.volumes:
            if volume.host_path:
                self._mounts.check(volume.host_path)

    def _stop(self, agent: Agent, status: AgentStatus) -> None:
        if status is AgentStatus.PAUSED:
            # NOTE: a frozen process cannot handle SIGTERM; thaw it so it can shut down.
            self._runtime.resume(agent.container)
        self._runtime.stop(agent.container, timeout=self._stop_timeout)

    def _restart(self, agent: Agent, status: AgentStatus) -> str:
        if not self._exists(agent.container):
            return self._start(agent, AgentStatus.STOPPED)
        if agent.spec.volumes:  # NOTE: a refused restart leaves the agent running
            self._recheck_mounts(agent, agent.container)
        if status is AgentStatus.PAUSED:
            self._runtime.resume(agent.container)  # NOTE: as _stop: thawed to shut down
        self._runtime.restart(agent.container, timeout=self._stop_timeout)
        return agent.container

    def _pause(self, agent: Agent, status: AgentStatus) -> None:
        self._runtime.pause(agent.container)

    def _resume(self, agent: Agent, status: AgentStatus) -> str | None:
        if status is AgentStatus.PAUSED:
            self._runtime.resume(agent.container)
            return None
        return self._start(agent, status)

    # -- containers -------------------------------------------------------------------

    def _observe(self, agent: Agent) -> tuple[AgentStatus, str]:
        """Return the agent's status from the runtime and its address when running.

        A missing container reads as stopped.
        """
        state: ContainerState | None = None
        if agent.container_id:
            try:
                state = self._runtime.inspect(agent.container_id)
            except ContainerGone:
                pass
        status = observed(agent.status, state.status if state else None)
        return status, state.ip if state and status is AgentStatus.RUNNING else ""

    def _exists(self, container_id: str) -> bool:
        try:
            self._runtime.inspect(container_id)
        except ContainerGone:
            return False
        return True

    def _recreate(self, agent: Agent) -> str:
        """Create a fresh container from the stored spec, clearing any stale ones first."""
        for stale in self._runtime.containers_of(agent.id):
            self._runtime.remove(stale)
        logger.info("agent %s: container missing, recreating from the stored spec", agent.id)
        self._ensure_volumes(agent)
        return self._create_container(agent)

    def _ensure_volumes(self, agent: Agent) -> None:
        """Create the agent's missing named volumes, labelled with its ID, and check all.

        NOTE: only these are removed by ``remove --volumes``; volumes that existed
        before the agent are someone else's, mounted only if ``allowed_volumes`` lists them.

        Raises:
            MountRefused: a volume the policy refuses.
        """
        for volume in agent.spec.volumes:
            if volume.volume:
                info = self._runtime.ensure_volume(volume.volume, agent.id)
                self._mounts.check_volume(info, agent.id)

    def gateway(self, *, egress: bool) -> tuple[str, str]:
        """Create the network agents join (egress or internal) if missing.

        Returns:
            The network's name and the host's address on it (where agents reach the proxy).
        """
        network = self._networks.egress if egress else self._networks.internal
        # NOTE: Docker allows two networks of one name; creating under a lock avoids that.
        with self._store.lock(f"network-{network}"):
            self._runtime.ensure_network(network, internal=not egress)
        return network, self._runtime.network_gateway(network)

    def _create_container(self, agent: Agent) -> str:
        spec = agent.spec
        network, gateway = self.gateway(egress=spec.egress)
        proxy = self._networks.proxy_host or gateway
        env = {**spec.env_vars, "AGENT_ID": agent.id, "AGENT_NAME": agent.name,
               "AGENTAINER_PROXY_URL": f"http://{proxy}:{self._networks.proxy_port}/agent"}
        return self._runtime.create(agent, network=network, env=env,
                                    mounts=self._bind_sources(spec),
                                    instance=self._store.instance())

    def _bind_sources(self, spec: AgentSpec) -> list[MountSpec]:
        """Check every bind path against the policy and return the container's mounts.

        NOTE: the runtime gets the resolved path, so a symlink swapped after this check does not
        move the mount; the path itself is checked again at every start.
        """
        mounts = []
        for volume in spec.volumes:
            if volume.host_path:
                source = self._mounts.check(volume.host_path)
                try:
                    source.mkdir(parents=True)
                except FileExistsError:
                    pass  # NOTE: a directory, or a file or FIFO, is mounted as it is
                mounts.append(MountSpec("bind", str(source), volume.container_path,
                                        volume.read_only))
            else:
                mounts.append(MountSpec("volume", volume.source, volume.container_path,
                                        volume.read_only))
        return mounts
