"""A failed pull says whether the image is missing (404) or the registry unreachable (503)."""

import pytest

from agentainer.agents.docker_runtime import _check_network, _pull_failed
from agentainer.errors import Conflict, NotFound, Unavailable


@pytest.mark.parametrize("reason, status, expected", [
    ("manifest for x:latest not found: manifest unknown", 404, NotFound),
    ("pull access denied for x, repository does not exist", 500, NotFound),
    ('Get "https://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused',
     500, Unavailable),
    ("context deadline exceeded", None, Unavailable),
])
def test_pull_failures_are_classified(reason, status, expected):
    error = _pull_failed("x:latest", reason, status)
    assert type(error) is expected and error.code == "image_pull_failed"
    assert "cannot pull image 'x:latest'" in str(error)


def test_a_daemon_whose_socket_is_gone_is_not_reachable(tmp_path):
    from agentainer.agents.docker_runtime import DockerRuntime
    runtime = DockerRuntime(base_url=f"unix://{tmp_path}/docker.sock")
    assert runtime.reachable(timeout=1) is False


def network(*, internal: bool = False, icc: str | None = None, managed: bool = True,
            driver: str = "bridge") -> dict:
    """A network as Docker lists it."""
    return {"Name": "agentainer-net", "Id": "abc", "Driver": driver, "Internal": internal,
            "Options": {} if icc is None else {"com.docker.network.bridge.enable_icc": icc},
            "Labels": {"agentainer.managed": "1"} if managed else {}}


@pytest.mark.parametrize("icc", ["false", "0", "False"])
def test_a_network_with_icc_off_is_used_as_it_is(icc):
    assert _check_network(network(icc=icc), internal=False, attached=["x"]) is False
    assert _check_network(network(icc=icc, internal=True), internal=True) is False


@pytest.mark.parametrize("icc", [None, "true", "1"])
def test_an_older_agentainers_empty_network_with_icc_on_is_recreated(icc):
    assert _check_network(network(icc=icc), internal=False, attached=[]) is True


def test_an_older_agentainers_network_with_icc_on_and_containers_is_refused():
    with pytest.raises(Conflict) as raised:
        _check_network(network(), internal=False, attached=["agentainer-agent-1"])
    assert raised.value.code == "network_mismatch"
    message = str(raised.value)
    assert "agentainer-agent-1" in message and "enable_icc" in message
    assert "docker network rm agentainer-net" in message and "agentainer resume" in message


def test_someone_elses_network_with_icc_on_is_refused_not_removed():
    with pytest.raises(Conflict) as raised:
        _check_network(network(managed=False), internal=False, attached=[])
    assert raised.value.code == "network_mismatch"
    assert "did not create it" in str(raised.value)


@pytest.mark.parametrize("found, internal", [
    (network(icc="false", internal=False), True),
    (network(icc="false", internal=True), False),
    (network(icc="false", driver="macvlan"), False),
])
def test_a_network_of_another_kind_is_refused(found, internal):
    with pytest.raises(Conflict) as raised:
        _check_network(found, internal=internal)
    assert raised.value.code == "network_mismatch"


@pytest.mark.parametrize("labels, owner", [
    ({"agentainer.managed": "1", "agentainer.id": "agent-1"}, "agent-1"),
    ({"agentainer.id": "agent-1"}, ""),  # NOTE: not Agentainer's without the managed label
    (None, ""),
])
def test_a_volume_belongs_to_the_agent_its_labels_name(labels, owner):
    from agentainer.agents.docker_runtime import _volume_info
    info = _volume_info({"Name": "v", "Driver": "local", "Labels": labels,
                         "Options": {"o": "bind"}})
    assert (info.owner, info.driver, info.options) == (owner, "local", {"o": "bind"})
