"""The Docker backend of :class:`~agentainer.agents.runtime.Runtime`: networks, containers,
logs, stats. The only module that imports the Docker SDK; Docker errors and Docker's
documents are translated into Agentainer's here only.
"""

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import docker.utils
import requests.exceptions
from docker.types import IPAMConfig, IPAMPool, LogConfig, Mount

from agentainer.errors import (
    AgentainerError, Conflict, ImageNotFound, NotFound, RuntimeFailure, Unavailable,
)
from agentainer.agents.mounts import MountSpec, VolumeInfo
from agentainer.agents.runtime import (
    EVENT_ACTIONS, ContainerGone, ContainerState, RuntimeEvent, Stream,
)
from agentainer.agents.spec import Agent, AgentSpec
from agentainer.statuses import AgentStatus

logger = logging.getLogger(__name__)

LABEL_ID = "agentainer.id"
LABEL_NAME = "agentainer.name"
LABEL_MANAGED = "agentainer.managed"
LABEL_INSTANCE = "agentainer.instance"
CONTAINER_PREFIX = "agentainer-"

_DOCKER_STATUS = {
    "created": AgentStatus.CREATED,
    "running": AgentStatus.RUNNING,
    "restarting": AgentStatus.RUNNING,
    "paused": AgentStatus.PAUSED,
    "exited": AgentStatus.STOPPED,
    "dead": AgentStatus.STOPPED,
    "removing": AgentStatus.STOPPED,
}

F = TypeVar("F", bound=Callable[..., Any])


def _volume_info(attrs: dict) -> VolumeInfo:
    labels = attrs.get("Labels") or {}
    owner = labels.get(LABEL_ID, "") if labels.get(LABEL_MANAGED) == "1" else ""
    return VolumeInfo(attrs["Name"], owner, attrs.get("Driver") or "",
                      dict(attrs.get("Options") or {}))


def container_name(agent_id: str) -> str:
    return CONTAINER_PREFIX + agent_id


def summarize(stats: dict[str, Any], *, now: float) -> dict[str, Any]:
    """Turn one Docker stats document into the figures Agentainer reports (runtime.py)."""
    cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage", {}).get("total_usage", 0)
                 - pre.get("cpu_usage", {}).get("total_usage", 0))
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    cpus = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or [1])
    memory = stats.get("memory_stats") or {}
    cache = (memory.get("stats") or {}).get("total_inactive_file",
                                            (memory.get("stats") or {}).get("inactive_file", 0))
    networks = (stats.get("networks") or {}).values()
    blkio = (stats.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    return {
        "timestamp": int(now * 1000),
        "cpu_percent": round(cpu_delta / system_delta * cpus * 100, 2)
        if cpu_delta > 0 and system_delta > 0 else 0.0,
        "memory_bytes": max(0, memory.get("usage", 0) - cache),
        "memory_limit_bytes": memory.get("limit", 0),
        "network_rx_bytes": sum(n.get("rx_bytes", 0) for n in networks),
        "network_tx_bytes": sum(n.get("tx_bytes", 0) for n in networks),
        "block_read_bytes": sum(e.get("value", 0) for e in blkio
                                if e.get("op", "").lower() == "read"),
        "block_write_bytes": sum(e.get("value", 0) for e in blkio
                                 if e.get("op", "").lower() == "write"),
        "pids": (stats.get("pids_stats") or {}).get("current", 0),
    }


def docker_mount(mount: MountSpec) -> Mount:
    return Mount(mount.target, mount.source, type=mount.kind, read_only=mount.read_only)


class _Events:
    """Docker's event stream as :class:`RuntimeEvent` items; ``close()`` closes Docker's."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[RuntimeEvent]:
        return self

    def __next__(self) -> RuntimeEvent:
        event = next(self._stream)
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        return RuntimeEvent(event.get("Action", ""), attributes.get(LABEL_ID, ""),
                            attributes.get("exitCode", ""))

    def close(self) -> None:
        self._stream.close()


ICC_OPTION = "com.docker.network.bridge.enable_icc"


def _icc_enabled(network: dict) -> bool:
    """Say whether the bridge lets its containers talk to each other (Docker's default)."""
    value = (network.get("Options") or {}).get(ICC_OPTION, "true")
    return value.strip().lower() not in ("false", "0", "f")  # NOTE: Go's strconv.ParseBool


def _check_network(network: dict, *, internal: bool, attached: Sequence[str] = ()) -> bool:
    """Refuse to reuse a network that is not what Agentainer would have created.

    APPSEC: a same-named network without Docker's ``internal`` flag would give
    --no-egress agents a way out; one with inter-container communication (ICC) on
    would let an agent reach another's app without the proxy (and its token).

    Args:
        network: the network as Docker lists it.
        internal: whether Agentainer needs it internal (no egress).
        attached: the names of the containers on it, running or not.

    Returns:
        True when it must be recreated first: it is Agentainer's own (an older version
        created it with ICC on) and no container is on it, so nothing is lost.

    Raises:
        Conflict: (network_mismatch) anything else that is not what Agentainer needs.
    """
    name = network["Name"]
    driver, is_internal = network.get("Driver"), bool(network.get("Internal"))
    if driver != "bridge" or is_internal != internal:
        wanted = "an internal bridge network" if internal else "a bridge network with egress"
        found = f"a {driver} network, {'internal' if is_internal else 'not internal'}"
        raise Conflict(f"network {name!r} exists but is {found}; Agentainer needs {wanted} of "
                       f"that name and will not use this one: remove it (docker network rm "
                       f"{name}) or set network / internal_network to another name",
                       code="network_mismatch")
    if not _icc_enabled(network):
        return False
    leak = f"network {name!r} exists but lets its containers reach each other ({ICC_OPTION} is on)"
    if (network.get("Labels") or {}).get(LABEL_MANAGED) != "1":
        raise Conflict(f"{leak} and Agentainer did not create it, so it will neither use nor "
                       f"remove it: remove it (docker network rm {name}) or set network / "
                       "internal_network to another name", code="network_mismatch")
    if attached:
        shown = ", ".join(sorted(attached)[:5]) + (", ..." if len(attached) > 5 else "")
        raise Conflict(
            f"{leak}: an older Agentainer created it, and {len(attached)} container(s) are on "
            f"it ({shown}), so Agentainer will not recreate it with ICC off. To migrate: "
            f"remove them (docker rm -f $(docker ps -aq --filter network={name})) and the "
            f"network (docker network rm {name}), restart the stack (it recreates the "
            "network), then `agentainer resume AGENT` recreates each agent's container from "
            "its stored spec",
            code="network_mismatch")
    return True


# NOTE: how Docker words "the registry answered: no such image (for you)"
_NO_SUCH_IMAGE = ("not found", "manifest unknown", "pull access denied", "does not exist")


def _pull_failed(image: str, reason: object, status: int | None = None) -> AgentainerError:
    """Return a missing image as NotFound, anything else (registry unreachable) Unavailable."""
    message = f"cannot pull image {image!r}: {reason}"
    if status == 404 or any(words in str(reason).lower() for words in _NO_SUCH_IMAGE):
        return NotFound(message, code="image_pull_failed")
    return Unavailable(message, code="image_pull_failed")


def _unreachable(ex: Exception) -> Unavailable:
    """Return the error a failure to reach the Docker daemon is reported as."""
    return Unavailable(f"Docker is unreachable: {ex}")


def translate_docker_errors(func: F) -> F:
    """Map docker SDK failures onto the Agentainer error tree."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except docker.errors.NotFound as ex:
            raise ContainerGone(str(ex.explanation or ex)) from ex
        except docker.errors.APIError as ex:
            message = str(ex.explanation or ex)
            if ex.status_code == 409:
                raise Conflict(f"Docker: {message}", code="docker_conflict") from ex
            if ex.status_code == 400:
                # NOTE: 409, not 400: what passed Agentainer's checks and Docker refuses
                # clashes with the host (a cpu_limit over its CPUs, say), not with the API
                raise Conflict(f"Docker refused the container: {message}",
                               code="docker_refused") from ex
            raise RuntimeFailure(f"Docker: {message}") from ex
        except (docker.errors.DockerException, requests.exceptions.ConnectionError) as ex:
            raise _unreachable(ex) from ex
    return wrapper  # type: ignore[return-value]


class DockerRuntime:
    """Runs agents as containers on Agentainer's networks (a :class:`Runtime`)."""

    def __init__(self, *, base_url: str = "", timeout: int = 120) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._client: docker.DockerClient | None = None
        self._docker_root: Path | None = None
        self._lock = threading.Lock()

    @property
    def api(self) -> docker.APIClient:
        """The low-level client, connected on first use so the server starts without Docker."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = self._connect(self._timeout)
                    except docker.errors.DockerException as ex:
                        raise _unreachable(ex) from ex
        return self._client.api

    def _connect(self, timeout: float) -> docker.DockerClient:
        # NOTE: typeshed says int; the SDK hands the seconds to requests, which takes float
        if self._base_url:
            return docker.DockerClient(base_url=self._base_url,
                                       timeout=timeout)  # type: ignore[arg-type]
        return docker.from_env(timeout=timeout)  # type: ignore[arg-type]

    @translate_docker_errors
    def ping(self) -> bool:
        return bool(self.api.ping())

    def reachable(self, *, timeout: float = 5.0) -> bool:
        """Say whether the daemon takes new connections now.

        NOTE: a stopping dockerd closes its socket before it signals any container, yet
        answers on connections already open (``api``'s are pooled) until its last container
        has stopped; only a new connection tells its shutdown from a container's crash.
        """
        try:
            client = self._connect(timeout)
        except docker.errors.DockerException:
            return False
        try:
            return bool(client.api.ping())
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return False
        finally:
            client.close()

    @translate_docker_errors
    def ensure_network(self, name: str, *, internal: bool) -> str:
        """Create the bridge network, ICC off, if it is missing; return its ID.

        An older Agentainer's network of that name with ICC on and no container on it
        is recreated with ICC off and the same addresses (so the gateway, where agents
        reach the proxy, does not move).

        Raises:
            Conflict: (network_mismatch) a network of that name exists but is not a
                bridge, its ``internal`` flag differs, or it allows ICC and cannot be
                recreated (not Agentainer's, or containers are on it).
        """
        found = [n for n in self.api.networks(names=[name]) if n["Name"] == name]
        if found:
            # NOTE: by name: a created, never started container has no NetworkID yet;
            # PERF: listed only for a network with ICC on (every deploy passes here)
            attached = [c["Names"][0].lstrip("/") for c in self.api.containers(
                all=True, filters={"network": name})] if _icc_enabled(found[0]) else []
            if not _check_network(found[0], internal=internal, attached=attached):
                return found[0]["Id"]
            return self._recreate_network(found[0])
        created = self._create_network(name, internal=internal, driver="bridge",
                                       options={ICC_OPTION: "false"})
        return created or self.ensure_network(name, internal=internal)

    def _create_network(self, name: str, *, internal: bool, **options: Any) -> str | None:
        """Create a network labelled as Agentainer's; None when another caller made one of
        that name first (Docker's 409)."""
        try:
            created = self.api.create_network(name, internal=internal, check_duplicate=True,
                                              labels={LABEL_MANAGED: "1"}, **options)
        except docker.errors.APIError as ex:
            if ex.status_code != 409:
                raise
            return None
        logger.info("network %s: created (%s, internal=%s)", name, options, internal)
        return created["Id"]

    def _recreate_network(self, old: dict) -> str:
        """Replace an empty network with ICC on by the same one with ICC off; return its ID."""
        name, ipam = old["Name"], old.get("IPAM") or {}
        pools = [IPAMPool(subnet=c.get("Subnet"), iprange=c.get("IPRange"),
                          gateway=c.get("Gateway")) for c in ipam.get("Config") or []]
        self.api.remove_network(old["Id"])
        created = self.api.create_network(
            name, driver="bridge", internal=bool(old.get("Internal")), check_duplicate=True,
            enable_ipv6=bool(old.get("EnableIPv6")),
            options={**(old.get("Options") or {}), ICC_OPTION: "false"},
            labels=old.get("Labels") or {LABEL_MANAGED: "1"},
            ipam=IPAMConfig(driver=ipam.get("Driver") or "default", pool_configs=pools))
        logger.warning("network %s: recreated with inter-container traffic off (it allowed it)",
                       name)
        return created["Id"]

    @translate_docker_errors
    def pull(self, image: str) -> None:
        """Pull the image from its registry.

        Raises:
            NotFound: (image_pull_failed) the registry has no such image, or denies it.
            Unavailable: (image_pull_failed) the registry could not be reached.
        """
        repository, tag = docker.utils.parse_repository_tag(image)
        try:
            # NOTE: Docker reports some failures only inside the progress stream.
            for message in self.api.pull(repository, tag=tag or "latest", stream=True,
                                         decode=True):
                if message.get("error"):
                    raise _pull_failed(image, message["error"])
        except docker.errors.APIError as ex:
            raise _pull_failed(image, ex.explanation or ex, ex.status_code) from ex
        logger.info("image %s: pulled", image)

    @translate_docker_errors
    def exposed_ports(self, image: str) -> list[int]:
        """Return the TCP ports the image EXPOSEs.

        Raises:
            ImageNotFound: the image is not present locally.
        """
        try:
            attrs = self.api.inspect_image(image)
        except docker.errors.ImageNotFound as ex:
            raise ImageNotFound(image) from ex
        ports = (attrs.get("Config") or {}).get("ExposedPorts") or {}
        return sorted(int(p.split("/")[0]) for p in ports if p.endswith("/tcp"))

    @translate_docker_errors
    def create(self, agent: Agent, *, network: str, env: dict[str, str],
               mounts: list[MountSpec], instance: str) -> str:
        """Create (not start) the agent's container; return its ID."""
        spec = self.api
        host_config = spec.create_host_config(
            network_mode=network,
            nano_cpus=agent.spec.cpu_limit or None,
            mem_limit=agent.spec.memory_limit or None,
            pids_limit=agent.spec.pids_limit or None,
            mounts=[docker_mount(mount) for mount in mounts],
            security_opt=["no-new-privileges"],
            # APPSEC: with raw sockets (Docker grants CAP_NET_RAW by default) an agent could
            # answer ARP for another agent's address and complete a TCP handshake with the
            # gateway as that agent, taking over its may_call and its identity in the journal
            cap_drop=["NET_RAW"],
            restart_policy={"Name": "no"},
            log_config=LogConfig(type="json-file", config={"max-size": "10m", "max-file": "3"}),
        )
        endpoint = spec.create_endpoint_config(aliases=[agent.id, agent.name])
        container = spec.create_container(
            agent.spec.image,
            name=container_name(agent.id),
            hostname=agent.id,
            environment=env,
            labels={LABEL_ID: agent.id, LABEL_NAME: agent.name, LABEL_MANAGED: "1",
                    LABEL_INSTANCE: instance},
            host_config=host_config,
            # NOTE: typeshed wants one EndpointConfig; the SDK takes {network: endpoint}
            networking_config=spec.create_networking_config(
                {network: endpoint}),  # type: ignore[arg-type]
        )
        return container["Id"]

    def check(self, spec: AgentSpec) -> None:
        """Refuse what one container cannot be: several replicas, or placed on a node.

        NOTE: 409, not 400: the body is well-formed (the schema allows it) and clashes
        with this installation's runtime, which JSON Schema cannot state (openapi.py)
        """
        if spec.replicas > 1 or spec.constraints:
            raise Conflict(f"{'replicas' if spec.replicas > 1 else 'constraints'} need "
                               "runtime = swarm (the docker runtime runs one container on "
                               "this host)", code="needs_swarm")

    @translate_docker_errors
    def start(self, container_id: str) -> None:
        self.api.start(container_id)

    @translate_docker_errors
    def restart(self, container_id: str, *, timeout: float) -> None:
        self.api.restart(container_id, timeout=int(timeout))

    @translate_docker_errors
    def stop(self, container_id: str, *, timeout: float) -> None:
        self.api.stop(container_id, timeout=int(timeout))

    @translate_docker_errors
    def pause(self, container_id: str) -> None:
        self.api.pause(container_id)

    @translate_docker_errors
    def resume(self, container_id: str) -> None:
        self.api.unpause(container_id)

    def remove(self, container_id: str) -> None:
        """Remove the container, running or not; a missing one is fine."""
        try:
            self._remove(container_id)
        except ContainerGone:
            pass

    @translate_docker_errors
    def _remove(self, container_id: str) -> None:
        self.api.remove_container(container_id, force=True)

    @translate_docker_errors
    def ensure_volume(self, name: str, agent_id: str) -> VolumeInfo:
        """Return the named volume, created labelled as the agent's when it is missing.

        NOTE: Docker answers a create of a name that exists with that volume, so one made
        by someone else between the two calls comes back with its own labels.
        """
        try:
            return _volume_info(self.api.inspect_volume(name))
        except docker.errors.NotFound:
            pass
        created = self.api.create_volume(name, labels={LABEL_MANAGED: "1", LABEL_ID: agent_id})
        logger.info("volume %s: created for agent %s", name, agent_id)
        return _volume_info(created)

    @translate_docker_errors
    def mounts(self, container_id: str) -> list[MountSpec]:
        """Return the container's mounts as Docker holds them."""
        host_config = self.api.inspect_container(container_id).get("HostConfig") or {}
        return [MountSpec(m.get("Type", ""), m.get("Source", ""), m.get("Target", ""),
                          bool(m.get("ReadOnly"))) for m in host_config.get("Mounts") or []]

    def docker_root(self) -> Path:
        """Return Docker's data root (``docker info``'s DockerRootDir), asked once."""
        if self._docker_root is None:
            self._docker_root = Path(self._info()["DockerRootDir"])
        return self._docker_root

    @translate_docker_errors
    def _info(self) -> dict:
        return self.api.info()

    @translate_docker_errors
    def remove_volume(self, name: str, agent_id: str) -> bool:
        """Remove the named volume if Agentainer created it for this agent.

        Returns:
            False when it is kept: not labelled as this agent's, or still in use.
            A volume that is already gone counts as removed.
        """
        try:
            labels = self.api.inspect_volume(name).get("Labels") or {}
            if labels.get(LABEL_MANAGED) != "1" or labels.get(LABEL_ID) != agent_id:
                return False
            self.api.remove_volume(name)
        except docker.errors.NotFound:
            return True
        except docker.errors.APIError as ex:
            if ex.status_code == 409:
                return False
            raise
        return True

    @translate_docker_errors
    def inspect(self, container_id: str) -> ContainerState:
        """Return what Docker says the container is doing.

        Raises:
            ContainerGone: the container does not exist.
        """
        info = self.api.inspect_container(container_id)
        state = info["State"]
        networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
        return ContainerState(
            status=_DOCKER_STATUS.get(state.get("Status", ""), AgentStatus.STOPPED),
            exit_code=int(state.get("ExitCode") or 0),
            oom_killed=bool(state.get("OOMKilled")),
            error=state.get("Error") or "",
            ip=next((n.get("IPAddress") or "" for n in networks.values()), ""),
        )

    @translate_docker_errors
    def containers_of(self, agent_id: str) -> list[str]:
        """Return the IDs of every container labelled as this agent's."""
        found = self.api.containers(all=True, filters={"label": f"{LABEL_ID}={agent_id}"})
        return [c["Id"] for c in found]

    @translate_docker_errors
    def statuses(self) -> dict[str, AgentStatus]:
        """Return agent ID -> container status for every Agentainer container, in one call."""
        found = self.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=1"})
        return {c["Labels"][LABEL_ID]: _DOCKER_STATUS.get(c.get("State", ""), AgentStatus.STOPPED)
                for c in found if LABEL_ID in (c.get("Labels") or {})}

    @translate_docker_errors
    def containers_of_instance(self, instance: str) -> dict[str, tuple[str, float]]:
        """Return container ID -> (agent ID, created Unix time) for this installation's."""
        found = self.api.containers(all=True, filters={"label": f"{LABEL_INSTANCE}={instance}"})
        return {c["Id"]: ((c.get("Labels") or {}).get(LABEL_ID, ""), float(c.get("Created", 0)))
                for c in found}

    @translate_docker_errors
    def addresses(self, networks: Sequence[str], instance: str) -> dict[str, str]:
        """Return IP address -> agent ID for this installation's running containers on
        these networks."""
        found = self.api.containers(filters={"label": f"{LABEL_INSTANCE}={instance}",
                                              "network": list(networks)})
        addresses = {}
        for c in found:
            agent_id = (c.get("Labels") or {}).get(LABEL_ID)
            attached = ((c.get("NetworkSettings") or {}).get("Networks") or {}).items()
            for network, settings in attached:
                if agent_id and network in networks and settings.get("IPAddress"):
                    addresses[settings["IPAddress"]] = agent_id
        return addresses

    @translate_docker_errors
    def events(self, instance: str, *, since: float | None = None) -> Stream[RuntimeEvent]:
        """Return this installation's container events (die, oom, start, ...) as they happen.

        The iterator blocks; ``close()`` on it ends the stream.
        """
        # NOTE: typeshed says since is an int; Docker takes fractional seconds, and a
        # rounded one would hand back events the monitor has handled
        return _Events(self.api.events(since=since, decode=True, filters={  # type: ignore
            "type": "container", "label": f"{LABEL_INSTANCE}={instance}",
            "event": list(EVENT_ACTIONS)}))

    @translate_docker_errors
    def stats(self, container_id: str) -> dict[str, Any]:
        """Return one resource sample, summarized (Docker's carries the previous one, for
        CPU %)."""
        return summarize(self.api.stats(container_id, stream=False), now=time.time())

    @translate_docker_errors
    def network_gateway(self, name: str) -> str:
        """Return the host's address on the network (where agents reach the proxy)."""
        config = self.api.inspect_network(name)["IPAM"]["Config"]
        return config[0]["Gateway"]

    @translate_docker_errors
    def logs(self, container_id: str, *, follow: bool, tail: int | None,
             since: float | None, timestamps: bool) -> Stream[bytes]:
        """Return the container's output, stdout and stderr demultiplexed, as a stream.

        The returned iterator has ``close()``, which releases the Docker connection.
        """
        return self.api.logs(container_id, stream=True, follow=follow,
                             tail="all" if tail is None else tail,
                             since=since, timestamps=timestamps)
