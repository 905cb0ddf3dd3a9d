"""The runtime protocol: what the service, the monitor, callers and the API ask of a backend.

A backend runs agents as *containers* (whatever it calls them) and answers through
:class:`Runtime`. :class:`~agentainer.agents.docker_runtime.DockerRuntime` runs each as a
container on one Docker Engine; :class:`~agentainer.agents.swarm_runtime.SwarmRuntime`
each as a Swarm service (its "container" is the service). wiring.py builds one, by the
``runtime`` setting, and nothing else imports them.

Every method may raise the Agentainer error tree (``Unavailable`` when the backend cannot
be reached, ``Conflict``, ``InvalidInput``, ``RuntimeFailure``) and, where it names a
container, :class:`ContainerGone` when that container no longer exists. No backend's own
exception or type crosses the seam: only the types below, :class:`~agentainer.agents.spec.Agent`,
:class:`~agentainer.statuses.AgentStatus` and the mount data of
:mod:`agentainer.agents.mounts`.

What a backend must provide, and guarantee:

Reachability
    ``ping()``: the backend answers on its usual connection (True), or raises
    ``Unavailable``. ``reachable(timeout=)``: whether it takes a *new* connection now,
    never raising; False while it shuts down, even if open connections still answer (the
    monitor tells a stopping daemon from crashed agents by it).
Specs
    ``check(spec)``: refuse (``Conflict``) an agent this backend cannot run as asked:
    several replicas or placement constraints on one Engine, a pause on Swarm.
Images
    ``pull(image)``: fetch the image; ``NotFound`` (image_pull_failed) when the registry has
    no such image, ``Unavailable`` when it cannot be reached. ``exposed_ports(image)``: the
    TCP ports the local image declares, sorted; ``ImageNotFound`` when it is not local.
Networks and volumes
    ``ensure_network(name, internal=)``: the network exists, isolates its containers from
    each other and (when ``internal``) from the outside; returns its ID. ``network_gateway``:
    this process's own address on it (the host's, for a bridge), where it listens for
    agents. ``ensure_volume(name, agent_id)``:
    the named volume exists (created labelled as the agent's when missing); returns its
    :class:`VolumeInfo`. ``remove_volume(name, agent_id)``: removes it only if it was created
    for that agent and is unused; False when kept, True when removed or already gone.
Containers
    ``create(agent, network=, env=, mounts=, instance=)``: create, not start, the agent's
    container on ``network`` with that environment and exactly those mounts (sources as
    given: already resolved and checked), reachable on the network by the agent's ID and
    name, tagged with the agent's ID and ``instance``, with no restart policy of its own;
    returns its ID. ``start``, ``stop(timeout=)`` (graceful, then killed after ``timeout``
    seconds), ``restart(timeout=)`` (stopped so, then started), ``pause`` (frozen, not
    stopped), ``resume`` (a paused one thawed). ``remove``:
    gone afterwards, running or not; a missing one is fine (no ``ContainerGone``).
Observing
    ``inspect``: the container's :class:`ContainerState` now. ``mounts``: the mounts it
    holds (what would be mounted at its next start). ``containers_of(agent_id)``: every
    container tagged with the agent's ID. ``containers_of_instance(instance)``: container ID
    -> (agent ID, created Unix time) for this installation's. ``statuses()``: agent ID ->
    status for every Agentainer container, in one call. ``addresses(networks, instance)``:
    address -> agent ID for this installation's running containers on those networks (how
    the proxy tells which agent calls it: the route to an agent is ``inspect(...).ip``).
Streams
    ``events(instance, since=)``: a blocking :class:`Stream` of :class:`RuntimeEvent`
    for this installation's containers, from ``since`` on. ``logs(...)``: a
    :class:`Stream` of the container's output chunks, stdout and stderr together.
    ``close()`` on either ends it and frees what it holds, even before the first item.
Metrics
    ``stats(container_id)``: one resource sample as a summary dict: ``timestamp`` (Unix ms),
    ``cpu_percent``, ``memory_bytes``, ``memory_limit_bytes``, ``network_rx_bytes``,
    ``network_tx_bytes``, ``block_read_bytes``, ``block_write_bytes``, ``pids``.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from agentainer.agents.mounts import MountSpec, VolumeInfo
from agentainer.agents.spec import Agent, AgentSpec
from agentainer.statuses import AgentStatus

T_co = TypeVar("T_co", covariant=True)

# NOTE: the actions a RuntimeEvent may carry (Docker's names for them)
EVENT_ACTIONS = ("die", "oom", "start", "pause", "unpause", "destroy")


class ContainerGone(Exception):
    """The container no longer exists (removed behind Agentainer's back)."""


@dataclass(frozen=True)
class ContainerState:
    """What the backend says a container is doing."""

    status: AgentStatus
    exit_code: int
    oom_killed: bool
    error: str          # why it could not start; "" when it did
    ip: str             # the container's address on its (single) network; "" when stopped


@dataclass(frozen=True)
class RuntimeEvent:
    """Something that happened to one of this installation's containers."""

    action: str         # one of EVENT_ACTIONS
    agent_id: str       # the agent the container is tagged with; "" when untagged
    exit_code: str = ""  # for "die": the code the process exited with, as reported


class Stream(Protocol[T_co]):
    """A blocking iterator that must be closed (it holds a connection)."""

    def __iter__(self) -> Iterator[T_co]: ...

    def __next__(self) -> T_co: ...

    def close(self) -> None: ...


class Runtime(Protocol):
    """Runs agents as containers; see the module docstring for what each method must do."""

    def ping(self) -> bool: ...

    def check(self, spec: AgentSpec) -> None: ...

    def reachable(self, *, timeout: float = 5.0) -> bool: ...

    def pull(self, image: str) -> None: ...

    def exposed_ports(self, image: str) -> list[int]: ...

    def ensure_network(self, name: str, *, internal: bool) -> str: ...

    def network_gateway(self, name: str) -> str: ...

    def ensure_volume(self, name: str, agent_id: str) -> VolumeInfo: ...

    def remove_volume(self, name: str, agent_id: str) -> bool: ...

    def create(self, agent: Agent, *, network: str, env: dict[str, str],
               mounts: list[MountSpec], instance: str) -> str: ...

    def start(self, container_id: str) -> None: ...

    def stop(self, container_id: str, *, timeout: float) -> None: ...

    def restart(self, container_id: str, *, timeout: float) -> None: ...

    def pause(self, container_id: str) -> None: ...

    def resume(self, container_id: str) -> None: ...

    def remove(self, container_id: str) -> None: ...

    def inspect(self, container_id: str) -> ContainerState: ...

    def mounts(self, container_id: str) -> list[MountSpec]: ...

    def containers_of(self, agent_id: str) -> list[str]: ...

    def containers_of_instance(self, instance: str) -> dict[str, tuple[str, float]]: ...

    def statuses(self) -> dict[str, AgentStatus]: ...

    def addresses(self, networks: Sequence[str], instance: str) -> dict[str, str]: ...

    def events(self, instance: str, *, since: float | None = None) -> Stream[RuntimeEvent]: ...

    def logs(self, container_id: str, *, follow: bool, tail: int | None,
             since: float | None, timestamps: bool) -> Stream[bytes]: ...

    def stats(self, container_id: str) -> dict[str, Any]: ...
