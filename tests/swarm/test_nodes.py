"""Two Docker nodes, one swarm: an attachable overlay carries HTTP between them, both ways.

Needs root, the Docker Engine and the host's swarm (tests/swarm/nodes.py); without the swarm
the test fails, it is never skipped. Every step is timed; the times are printed at the end.
"""

import contextlib
import json
import os
import time

import pytest

from tests.stack import ECHO_IMAGE
from tests.swarm.nodes import SecondNode, poll, require_manager, run

ON_SECOND = "node.labels.agentainer.node==second"
BUDGET = 120.0  # seconds for the whole test, the second node's up() and down() included


class Steps:
    """Wall-clock seconds of each named step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = time.monotonic() - start

    def total(self) -> float:
        return sum(self.seconds.values())


@pytest.fixture
def steps(capsys: pytest.CaptureFixture):
    timed = Steps()
    yield timed
    with capsys.disabled():
        print("\n" + "\n".join(f"  {name:<28} {seconds:6.2f} s"
                               for name, seconds in [*timed.seconds.items(),
                                                     ("total", timed.total())]))


@pytest.fixture
def node(steps: Steps):
    try:
        require_manager()
    except RuntimeError as ex:
        pytest.fail(str(ex), pytrace=False)
    with steps("second node up"):
        second = SecondNode().up()
    yield second
    with steps("second node down"):
        second.down()
    assert steps.total() < BUDGET, steps.seconds


def fetched(exec_in: list[str], url: str, *, timeout: float = 30) -> dict:
    """GET ``url`` with busybox wget in a container (``exec_in``: the docker exec prefix)
    until it answers; its JSON echo. NOTE: busybox's ``wget -T`` crashes, hence timeout."""
    answer: list[str] = []

    def answered() -> bool:
        result = run(*exec_in, "timeout", "3", "wget", "-qO-", url, check=False)
        answer[:] = [result] if result else []
        return bool(result)

    poll(answered, timeout=timeout, what=f"an answer from {url}", interval=0.5)
    return json.loads(answer[0])


def address(inspect: list[str], container: str, network: str) -> str:
    return run(*inspect, "inspect", container, "--format",
               f"{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}")


def test_an_overlay_carries_http_across_the_two_nodes(node: SecondNode, steps: Steps):
    prefix = f"an2t-{os.getpid()}"
    network, service, client = f"{prefix}-net", f"{prefix}-echo", f"{prefix}-client"
    on_second = ["docker", "-H", node.docker_host]
    assert int((node.directory / "docker.pid").read_text()) == node.pid
    with steps("load image into node 2"):
        node.load(ECHO_IMAGE)
    try:
        with steps("overlay network"):
            run("docker", "network", "create", "--driver", "overlay", "--attachable", network)
        with steps("service task on node 2"):
            # NOTE: dnsrr: no IPVS in this kernel, so a virtual IP never answers (nodes.py)
            run("docker", "service", "create", "--detach", "--no-resolve-image", "--name",
                service, "--network", network, "--endpoint-mode", "dnsrr", "--constraint",
                ON_SECOND, ECHO_IMAGE)
            poll(lambda: bool(node.docker("ps", "-q", "--filter",
                                          f"label=com.docker.swarm.service.name={service}")),
                 timeout=60, what=f"the task of {service} on node 2")
            task = node.docker("ps", "-q", "--filter",
                               f"label=com.docker.swarm.service.name={service}")
        running = run("docker", "service", "ps", "-q", "--filter", "desired-state=running",
                      service).split()
        assert [run("docker", "inspect", "--format", "{{.NodeID}}", task_id)
                for task_id in running] == [node.node_id]
        with steps("container on node 1"):
            run("docker", "run", "--detach", "--name", client, "--network", network,
                ECHO_IMAGE)
        on_client, on_task = ["docker", "exec", client], [*on_second, "exec", task]

        with steps("node 1 -> node 2 by name"):
            echo = fetched(on_client, f"http://{service}:8000/")
        assert echo["path"] == "/" and ["Host", f"{service}:8000"] in echo["headers"]
        with steps("node 1 -> node 2 by IP"):
            fetched(on_client, f"http://{address(on_second, task, network)}:8000/by-ip")
        with steps("node 2 -> node 1 by name"):
            assert fetched(on_task, f"http://{client}:8000/back")["path"] == "/back"
        with steps("node 2 -> node 1 by IP"):
            fetched(on_task, f"http://{address(['docker'], client, network)}:8000/back-ip")
    finally:
        with steps("remove service, network"):
            run("docker", "rm", "--force", client, check=False)
            run("docker", "service", "rm", service, check=False)
            poll(lambda: run("docker", "network", "rm", network, check=False) == network
                 or not run("docker", "network", "ls", "-q", "--filter", f"name=^{network}$"),
                 timeout=30, what=f"network {network} to go", interval=0.5)
