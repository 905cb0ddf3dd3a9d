"""AgentService.deploy takes back a failed deploy, and the name is always released."""

import contextlib
from pathlib import Path

import pytest

from agentainer.agents.mounts import MountPolicy, VolumeInfo
from agentainer.agents.service import AgentService, Networks
from agentainer.agents.spec import parse_deploy
from agentainer.errors import InvalidInput, Unavailable


class FailingRuntime:
    """Creates volumes, then fails to create the container; Docker is gone by cleanup."""

    def __init__(self) -> None:
        self.volumes: list[str] = []

    def check(self, spec) -> None:
        pass

    def exposed_ports(self, image: str) -> list[int]:
        return [8000]

    def ensure_volume(self, name: str, agent_id: str) -> VolumeInfo:
        self.volumes.append(name)
        return VolumeInfo(name, agent_id, "local")

    def ensure_network(self, name: str, *, internal: bool) -> str:
        return name

    def network_gateway(self, name: str) -> str:
        return "172.30.0.1"

    def create(self, *args, **kwargs) -> str:
        raise InvalidInput("Docker refused the container: bad spec")

    def remove_volume(self, name: str, agent_id: str) -> None:
        raise Unavailable("Docker is unreachable")


class Reservations:
    """The store's name reservation (and a lock that never waits)."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def reserve(self, agent_id: str, name: str, token_hash: str) -> None:
        self.names.add(name)

    def release(self, agent_id: str, name: str, token_hash: str) -> None:
        self.names.discard(name)

    def instance(self) -> str:
        return "test"

    def lock(self, name: str) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


def test_a_failed_deploy_releases_its_name_even_when_cleanup_fails(tmp_path: Path):
    store = Reservations()
    service = AgentService(store, FailingRuntime(),  # type: ignore[arg-type]
                           purge_requests=lambda agent_id: None,
                           networks=Networks("net", "internal", 8081),
                           mounts=MountPolicy([tmp_path], tmp_path / "data",
                                              docker_root=lambda: Path("/var/lib/docker")),
                           on_running=lambda agent_id: None)
    spec, _ = parse_deploy({"name": "web", "image": "echo",
                            "volumes": [{"volume": "webdata", "container_path": "/data"}]})
    with pytest.raises(InvalidInput, match="bad spec"):  # NOTE: the first error, not cleanup's
        service.deploy(spec)
    assert store.names == set()
