"""The Docker Swarm backend of :class:`~agentainer.agents.runtime.Runtime`: each agent is a
Swarm service, what the protocol calls a container is that service, and its tasks are what
runs.

How the lifecycle maps onto a service:

- ``create``: the service at 0 replicas, on the agent's attachable overlay, with Agentainer's
  labels, limits (as limits and reservations), env, mounts, placement constraints, and
  restart condition ``none``: Swarm never restarts an agent; the monitor does (its backoff
  and crash-loop rule are the same on every backend).
- ``start`` and ``restart``: the agent's replica count and a forced update, which replaces
  every task (a stopped agent's, a crashed one's, or a running one's, stopped first); the
  call returns once a task runs.
- ``stop``: scale to 0, and wait for the tasks to end (``stop_grace_period``, then killed).
- ``pause`` / ``resume``: refused (``pause_unsupported``). Swarm has no pause: ``stop``
  scales to 0 instead, and :meth:`SwarmRuntime.check` refuses ``idle_action: pause``.
- ``remove``: the service goes, and its tasks with it.

Statuses come from the service's tasks (:func:`_state`). Docker reports no task events and
a worker node's container events stay on that node, so :meth:`SwarmRuntime.events` watches
the manager's task list and turns each task's changes into the events the monitor knows.

NOTE: services use ``endpoint_mode: dnsrr``. A virtual IP needs IPVS in the kernel, which
not every host has (this project's CI machine has none); with DNS round robin the
service's name resolves to its running tasks' addresses, the proxy's route to an agent is
that name, and each new upstream connection goes to one of its tasks.
"""

import datetime
import fcntl
import ipaddress
import logging
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from docker.types import (
    ContainerSpec, DriverConfig, EndpointSpec, NetworkAttachmentConfig, Placement,
    Resources, RestartPolicy, ServiceMode, TaskTemplate, UpdateConfig,
)
from docker.types.daemon import CancellableStream

from agentainer.agents.docker_runtime import (
    LABEL_ID, LABEL_INSTANCE, LABEL_MANAGED, LABEL_NAME, DockerRuntime, container_name,
    docker_mount, translate_docker_errors,
)
from agentainer.agents.mounts import MountSpec
from agentainer.agents.runtime import ContainerGone, ContainerState, RuntimeEvent, Stream
from agentainer.agents.spec import Agent, AgentSpec
from agentainer.errors import Conflict, RuntimeFailure, Unavailable
from agentainer.statuses import AgentStatus, IdleAction

logger = logging.getLogger(__name__)

LABEL_REPLICAS = "agentainer.replicas"  # NOTE: the scale ``start`` brings the service to
NO_NEW_PRIVILEGES_API = (1, 46)  # NOTE: the first Engine API whose services take it
STARTING = frozenset({"new", "allocated", "pending", "assigned", "accepted", "preparing",
                      "ready", "starting"})
ENDED = frozenset({"complete", "shutdown", "failed", "rejected", "remove", "orphaned"})
START_WAIT = 60.0  # NOTE: seconds ``start`` waits for a task to run (the image is local)
STOP_MARGIN = 15.0  # NOTE: seconds past the grace period ``stop`` waits for tasks to end
POLL = 0.25         # NOTE: seconds between looks at the task list
SIOCGIFADDR = 0x8915
EPOCH = "1970-01-01T00:00:00Z"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _unix(stamp: str) -> float:
    """Return a Swarm timestamp (RFC 3339, nanoseconds) as Unix time."""
    head, _, rest = stamp.rstrip("Z").partition(".")
    moment = datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp() + float(f"0.{rest or 0}")


def _replicas(service: dict) -> int:
    return int(((service["Spec"].get("Mode") or {}).get("Replicated") or {})
               .get("Replicas") or 0)


def _newest_first(tasks: list[dict]) -> list[dict]:
    return sorted(tasks, key=lambda task: task.get("CreatedAt", ""), reverse=True)


def _state(service: dict, tasks: list[dict]) -> ContainerState:
    """Return what a service's tasks say the agent is doing.

    Running while any task runs; while a task is on its way (and Swarm reports no error for
    it) running too, as Docker calls a restarting container; else stopped, with the newest
    ended task's exit code and, when Swarm could not start it, why. A service never scaled
    up (no task at all) is created.
    """
    name = service["Spec"]["Name"]
    states = [(task["Status"].get("State", ""), task) for task in _newest_first(tasks)]
    if any(state == "running" for state, _ in states):
        return ContainerState(AgentStatus.RUNNING, 0, False, "", name)
    if _replicas(service) and any(state in STARTING and not task["Status"].get("Err")
                                  for state, task in states):
        return ContainerState(AgentStatus.RUNNING, 0, False, "", name)
    if not states:
        return ContainerState(AgentStatus.CREATED, 0, False, "", "")
    status = states[0][1]["Status"]
    exit_code = int((status.get("ContainerStatus") or {}).get("ExitCode") or 0)
    error = (status.get("Err") or "") if states[0][0] in ("rejected", "pending") else ""
    return ContainerState(AgentStatus.STOPPED, exit_code, False, error, "")


def local_addresses() -> Iterator[ipaddress.IPv4Address]:
    """Yield this network namespace's IPv4 addresses, one per interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)
            except OSError:
                continue  # NOTE: an interface with no IPv4 address
            yield ipaddress.IPv4Address(answer[20:24])


class _TaskWatch:
    """The tasks of this installation's services, polled, as :class:`RuntimeEvent` items.

    ``start`` when a task comes to run, ``die`` (with its exit code) when a running task
    ends, ``destroy`` when an agent's service is gone. ``close()`` ends the iteration.
    """

    def __init__(self, runtime: "SwarmRuntime", instance: str) -> None:
        self._runtime = runtime
        self._instance = instance
        self._closed = threading.Event()
        self._pending: deque[RuntimeEvent] = deque()
        self._tasks: dict[str, tuple[str, str]] = {}  # task ID -> (state, agent ID)
        self._agents: set[str] = set()
        self._began = time.time()
        self._look(emit=False)

    def __iter__(self) -> Iterator[RuntimeEvent]:
        return self

    def __next__(self) -> RuntimeEvent:
        while not self._pending:
            if self._closed.wait(POLL):
                raise StopIteration
            self._look(emit=True)
        return self._pending.popleft()

    def _look(self, *, emit: bool) -> None:
        services, tasks = self._runtime.services_and_tasks(self._instance)
        agents = {service["ID"]: service["Spec"]["Labels"][LABEL_ID] for service in services}
        seen = {}
        for task in tasks:
            agent_id = agents.get(task.get("ServiceID", ""))
            if agent_id is None:
                continue
            state = task["Status"].get("State", "")
            seen[task["ID"]] = (state, agent_id)
            before = self._tasks.get(task["ID"], ("", ""))[0]
            if not emit or state == before:
                continue
            if state == "running":
                self._pending.append(RuntimeEvent("start", agent_id))
            elif state in ENDED and before not in ENDED and (
                    before == "running" or _unix(task.get("CreatedAt") or EPOCH) > self._began):
                # NOTE: one that came and went between two looks is seen ended at once
                code = (task["Status"].get("ContainerStatus") or {}).get("ExitCode")
                self._pending.append(RuntimeEvent("die", agent_id, str(code or 0)))
        if emit:
            self._pending.extend(RuntimeEvent("destroy", gone)
                                 for gone in self._agents - set(agents.values()))
        self._tasks, self._agents = seen, set(agents.values())

    def close(self) -> None:
        self._closed.set()


class SwarmRuntime(DockerRuntime):
    """Runs agents as services of the Swarm whose manager ``base_url`` reaches.

    Images, volumes and reachability are the Engine's, as for :class:`DockerRuntime`;
    everything that runs is a service.
    """

    def __init__(self, *, base_url: str = "", timeout: int = 120,
                 stop_timeout: float = 10.0) -> None:
        super().__init__(base_url=base_url, timeout=timeout)
        self._stop_timeout = stop_timeout

    def check(self, spec: AgentSpec) -> None:
        """Refuse what a Swarm service cannot be: an agent the idle rule would pause (409,
        as DockerRuntime.check)."""
        if spec.idle_timeout and spec.idle_action is IdleAction.PAUSE:
            raise Conflict("idle_action pause needs the docker runtime: Swarm has no "
                               "pause (use idle_action stop, which scales the service to 0)",
                               code="pause_unsupported")

    @translate_docker_errors
    def ensure_network(self, name: str, *, internal: bool) -> str:
        """Create the attachable overlay network if it is missing; return its ID.

        Raises:
            Conflict: (network_mismatch) a network of that name is not an attachable
                overlay, or its ``internal`` flag differs.
        """
        found = [n for n in self.api.networks(names=[name]) if n["Name"] == name]
        if not found:
            created = self._create_network(name, internal=internal, driver="overlay",
                                           attachable=True)
            return created or self.ensure_network(name, internal=internal)
        network = self.api.inspect_network(found[0]["Id"])
        is_internal = bool(network.get("Internal"))
        if (network.get("Driver") != "overlay" or not network.get("Attachable")
                or is_internal != internal):
            wanted = "an attachable overlay network" + (", internal" if internal else "")
            raise Conflict(f"network {name!r} exists but is a {network.get('Driver')} network"
                           f"{', attachable' if network.get('Attachable') else ''}"
                           f"{', internal' if is_internal else ''}; the swarm runtime needs "
                           f"{wanted} of that name: remove it (docker network rm {name}) or "
                           "set network / internal_network to another name",
                           code="network_mismatch")
        return network["Id"]

    @translate_docker_errors
    def network_gateway(self, name: str) -> str:
        """Return this process's own address on the network (it runs in a task on it).

        Raises:
            Unavailable: (not_on_network) this process has no address on that network.
        """
        config = self.api.inspect_network(name).get("IPAM", {}).get("Config") or []
        subnets = [ipaddress.ip_network(c["Subnet"]) for c in config if c.get("Subnet")]
        for address in local_addresses():
            if any(address in subnet for subnet in subnets):
                return str(address)
        raise Unavailable(f"this process has no address on network {name!r}: with runtime "
                          "= swarm, Agentainer's programs run as tasks of its stack, on its "
                          "networks (conf/swarm/stack.yml)", code="not_on_network")

    @translate_docker_errors
    def create(self, agent: Agent, *, network: str, env: dict[str, str],
               mounts: list[MountSpec], instance: str) -> str:
        """Create the agent's service at 0 replicas; return its ID."""
        spec = agent.spec
        labels = {LABEL_ID: agent.id, LABEL_NAME: agent.name, LABEL_MANAGED: "1",
                  LABEL_INSTANCE: instance}
        environment: dict[str, str | bytes | None] = dict(env)
        container = ContainerSpec(
            spec.image, env=environment, hostname=agent.id, labels=labels,
            mounts=[docker_mount(mount) for mount in mounts],
            stop_grace_period=int(self._stop_timeout * 1e9),
            # APPSEC: as DockerRuntime.create: no raw sockets (ARP spoofing on the network)
            cap_drop=["NET_RAW"])
        if _version(self.api.api_version) >= NO_NEW_PRIVILEGES_API:
            container["Privileges"] = {"NoNewPrivileges": True}
        resources = Resources(cpu_limit=spec.cpu_limit or None,
                              mem_limit=spec.memory_limit or None,
                              cpu_reservation=spec.cpu_limit or None,
                              mem_reservation=spec.memory_limit or None)
        if spec.pids_limit:
            resources.setdefault("Limits", {})["Pids"] = spec.pids_limit
        template = TaskTemplate(
            container, resources=resources, restart_policy=RestartPolicy(condition="none"),
            placement=Placement(constraints=list(spec.constraints)),
            log_driver=DriverConfig("json-file", {"max-size": "10m", "max-file": "3"}),
            networks=[NetworkAttachmentConfig(network, aliases=[agent.id, agent.name])])
        created = self.api.create_service(
            template, name=container_name(agent.id),
            labels={**labels, LABEL_REPLICAS: str(spec.replicas)},
            mode=ServiceMode("replicated", replicas=0),
            update_config=UpdateConfig(parallelism=0, failure_action="continue"),
            endpoint_spec=EndpointSpec(mode="dnsrr"))
        return created["ID"]

    @translate_docker_errors
    def start(self, container_id: str) -> None:
        """Scale the service to the agent's replicas, replacing every task (a forced
        update); return once one runs.

        Raises:
            RuntimeFailure: (start_failed) no task came to run: Swarm's reason, or the
                task's exit code.
        """
        service = self.api.inspect_service(container_id)
        template = service["Spec"]["TaskTemplate"]
        template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
        replicas = int(service["Spec"]["Labels"].get(LABEL_REPLICAS, "1"))
        self.api.update_service(container_id, service["Version"]["Index"],
                                task_template=template, fetch_current_spec=True,
                                mode=ServiceMode("replicated", replicas=replicas))
        self._await_task(service, since=time.time())

    def _await_task(self, service: dict, *, since: float) -> None:
        deadline = time.monotonic() + START_WAIT
        while True:
            tasks = [task for task in self.api.tasks(filters={"service": service["ID"]})
                     if _unix(task.get("CreatedAt") or EPOCH) >= since - 1]
            states = {task["Status"].get("State") for task in tasks}
            if "running" in states:
                return
            ended = [task for task in _newest_first(tasks)
                     if task["Status"].get("State") in ENDED - {"shutdown", "remove"}]
            if ended or time.monotonic() > deadline:
                status = ended[0]["Status"] if ended else (tasks[0]["Status"] if tasks else {})
                reason = status.get("Err") or "no task came to run within " \
                    f"{START_WAIT:.0f}s"
                raise RuntimeFailure(f"service {service['Spec']['Name']}: {reason}",
                                     code="start_failed")
            time.sleep(POLL)

    def restart(self, container_id: str, *, timeout: float) -> None:
        """Replace the service's tasks (a forced update: stop-first, the grace period)."""
        self.start(container_id)

    @translate_docker_errors
    def stop(self, container_id: str, *, timeout: float) -> None:
        """Scale the service to 0 and wait (the grace period, plus a margin) for its tasks
        to end."""
        service = self.api.inspect_service(container_id)
        if _replicas(service):
            self.api.update_service(container_id, service["Version"]["Index"],
                                    fetch_current_spec=True,
                                    mode=ServiceMode("replicated", replicas=0))
        deadline = time.monotonic() + timeout + STOP_MARGIN
        while time.monotonic() < deadline:
            tasks = self.api.tasks(filters={"service": container_id})
            if not any(task["Status"].get("State") not in ENDED for task in tasks):
                return
            time.sleep(POLL)
        logger.warning("service %s: tasks still running %.0fs after scaling to 0",
                       container_id, timeout + STOP_MARGIN)

    def pause(self, container_id: str) -> None:
        raise Conflict("Swarm has no pause: stop the agent instead (it scales to 0; start "
                       "brings it back)", code="pause_unsupported")

    resume = pause

    @translate_docker_errors
    def _remove(self, container_id: str) -> None:
        """Remove the service and so its tasks (``remove`` forgives a missing one)."""
        self.api.remove_service(container_id)

    @translate_docker_errors
    def mounts(self, container_id: str) -> list[MountSpec]:
        """Return the mounts the service's tasks get."""
        container = self.api.inspect_service(container_id)["Spec"]["TaskTemplate"][
            "ContainerSpec"]
        return [MountSpec(m.get("Type", ""), m.get("Source", ""), m.get("Target", ""),
                          bool(m.get("ReadOnly"))) for m in container.get("Mounts") or []]

    @translate_docker_errors
    def inspect(self, container_id: str) -> ContainerState:
        """Return what the service's tasks say (:func:`_state`).

        Raises:
            ContainerGone: the service does not exist.
        """
        service = self.api.inspect_service(container_id)
        return _state(service, self.api.tasks(filters={"service": service["ID"]}))

    @translate_docker_errors
    def services_and_tasks(self, instance: str) -> tuple[list[dict], list[dict]]:
        """Return this installation's agent services and all of the swarm's tasks."""
        services = self.api.services(filters={"label": f"{LABEL_INSTANCE}={instance}"})
        return ([s for s in services if LABEL_ID in (s["Spec"].get("Labels") or {})],
                self.api.tasks())

    @translate_docker_errors
    def containers_of(self, agent_id: str) -> list[str]:
        return [s["ID"] for s in self.api.services(filters={"label": f"{LABEL_ID}={agent_id}"})]

    @translate_docker_errors
    def containers_of_instance(self, instance: str) -> dict[str, tuple[str, float]]:
        services = self.api.services(filters={"label": f"{LABEL_INSTANCE}={instance}"})
        return {s["ID"]: ((s["Spec"].get("Labels") or {}).get(LABEL_ID, ""),
                          _unix(s.get("CreatedAt") or EPOCH))
                for s in services}

    @translate_docker_errors
    def statuses(self) -> dict[str, AgentStatus]:
        """Return agent ID -> status for every Agentainer service, in two calls."""
        services = self.api.services(filters={"label": f"{LABEL_MANAGED}=1"})
        tasks: dict[str, list[dict]] = {}
        for task in self.api.tasks():
            tasks.setdefault(task.get("ServiceID", ""), []).append(task)
        return {s["Spec"]["Labels"][LABEL_ID]: _state(s, tasks.get(s["ID"], [])).status
                for s in services if LABEL_ID in (s["Spec"].get("Labels") or {})}

    def addresses(self, networks: Sequence[str], instance: str) -> dict[str, str]:
        """Return task address -> agent ID for this installation's running tasks on
        these networks."""
        services, tasks = self.services_and_tasks(instance)
        agents = {s["ID"]: s["Spec"]["Labels"][LABEL_ID] for s in services}
        addresses = {}
        for task in tasks:
            agent_id = agents.get(task.get("ServiceID", ""))
            if agent_id is None or task["Status"].get("State") != "running":
                continue
            for attached in task.get("NetworksAttachments") or []:
                if (attached.get("Network") or {}).get("Spec", {}).get("Name") in networks:
                    for address in attached.get("Addresses") or []:
                        addresses[address.split("/")[0]] = agent_id
        return addresses

    def events(self, instance: str, *, since: float | None = None) -> Stream[RuntimeEvent]:
        """Return this installation's task changes as events, from now on (``since`` is
        not replayed: the monitor reconciles when a stream starts)."""
        return _TaskWatch(self, instance)

    @translate_docker_errors
    def logs(self, container_id: str, *, follow: bool, tail: int | None,
             since: float | None, timestamps: bool) -> Stream[bytes]:
        """Return the output of the service's tasks, on whichever node they run."""
        api = self.api
        params: dict[str, Any] = {"stdout": 1, "stderr": 1, "follow": int(follow),
                                  "timestamps": int(timestamps),
                                  "tail": "all" if tail is None else tail}
        if since is not None:
            params["since"] = since
        # NOTE: the SDK's service_logs hides the response, and only closing that frees the
        # connection of a followed stream; this is its request, with the stream kept
        response = api._get(api._url("/services/{0}/logs", container_id),  # type: ignore
                            params=params, stream=True)
        api._raise_for_status(response)  # type: ignore[attr-defined]
        return CancellableStream(
            api._multiplexed_response_stream_helper(response), response)  # type: ignore

    @translate_docker_errors
    def stats(self, container_id: str) -> dict[str, Any]:
        """Return one resource sample of the service's running task on this node.

        Raises:
            RuntimeFailure: (metrics_unavailable) no task of it runs on this node (the
                Engine API gives a container's figures only on its own node).
        """
        for task in self.api.tasks(filters={"service": container_id,
                                            "desired-state": "running"}):
            found = (task["Status"].get("ContainerStatus") or {}).get("ContainerID")
            if task["Status"].get("State") == "running" and found:
                try:
                    return super().stats(found)
                except ContainerGone:
                    continue
        raise RuntimeFailure(f"service {container_id}: no task of it runs on this node, "
                             "where its figures could be read", code="metrics_unavailable")
