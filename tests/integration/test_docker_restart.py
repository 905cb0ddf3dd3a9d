"""A stopping Docker daemon is not a crash: agents meant to run come back with it.

Runs a private dockerd of its own (own data-root, exec-root and socket) in a network
namespace of its own, joined to the host by a veth pair: a second dockerd in the host's
namespace deletes the host's ``docker0`` as it starts (with ``--bridge none`` or ``-b``), and
its networks could take subnets the main daemon uses. The server, a worker and the monitor
run in that namespace too (they reach agents by their container addresses); Redis listens on
the host's end of the pair and the tests reach the server at the namespace's end.
"""

import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import requests

from tests.conftest import RedisServer
from tests.helpers import free_port, wait_for
from tests.stack import BIN, ECHO_IMAGE, TEST_SETTINGS, Api, Stack
from tests.integration.journal_helpers import started, wait_for_status


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=30)


class PrivateDocker:
    """A dockerd in its own network namespace, stopped and started by its PID."""

    def __init__(self, root: Path) -> None:
        tag = secrets.token_hex(3)
        self.netns = f"agd6{tag}"
        self.host_link, self.ns_link = f"agh{tag}", f"agn{tag}"
        subnet = f"10.250.{secrets.randbelow(256)}.{secrets.randbelow(64) * 4}"
        prefix, last = subnet.rsplit(".", 1)
        self.host_ip, self.ns_ip = f"{prefix}.{int(last) + 1}", f"{prefix}.{int(last) + 2}"
        self.root = root
        self.socket = root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.log = root / "dockerd.log"
        self._process: subprocess.Popen | None = None

    @property
    def enter(self) -> list[str]:
        """The command prefix that runs a program in the daemon's network namespace."""
        return ["nsenter", f"--net=/var/run/netns/{self.netns}"]

    def create_namespace(self) -> None:
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "add", self.host_link, "type", "veth", "peer", "name", self.ns_link)
        _run("ip", "link", "set", self.ns_link, "netns", self.netns)
        _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_link)
        _run("ip", "link", "set", self.host_link, "up")
        _run("ip", "-n", self.netns, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_link)
        _run("ip", "-n", self.netns, "link", "set", self.ns_link, "up")
        _run("ip", "-n", self.netns, "link", "set", "lo", "up")

    def start(self) -> None:
        # NOTE: nsenter execs dockerd, so the child's PID is the daemon's (and its pid file's)
        with open(self.log, "ab") as log:
            self._process = subprocess.Popen(
                [*self.enter, "dockerd", "--data-root", str(self.root / "data"),
                 "--exec-root", str(self.root / "exec"), "-H", self.url,
                 "--pidfile", str(self.root / "docker.pid"), "--iptables=false",
                 "--bridge", "none"], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        try:
            wait_for(self._answers, timeout=30, message="the private dockerd")
        except AssertionError:
            pytest.fail("the private dockerd did not start; its log ends:\n"
                        + self.log.read_text(errors="replace")[-2000:])

    def _answers(self) -> bool:
        assert self._process.poll() is None, "dockerd exited"
        client = self.client()
        try:
            return client.ping()
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM, as ``systemctl stop docker`` does; wait until the daemon has exited."""
        pid = int((self.root / "docker.pid").read_text())
        assert pid == self._process.pid
        os.kill(pid, signal.SIGTERM)
        self._process.wait(timeout=60)

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=30)

    def remove_everything(self) -> None:
        """Remove the daemon's containers and networks, stop it, remove its namespace."""
        if self.running():
            client = self.client()
            try:
                for container in client.containers.list(all=True):
                    container.remove(force=True, v=True)
                for network in client.networks.list():
                    if network.name not in ("bridge", "host", "none"):
                        network.remove()
            finally:
                client.close()
                self._process.terminate()
                try:
                    self._process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.host_link], capture_output=True, timeout=30)
        # NOTE: dockerd mounts its data-root on itself and unmounts it only on a clean exit
        subprocess.run(["umount", "-R", str(self.root / "data")], capture_output=True,
                       timeout=30)
        shutil.rmtree(self.root / "data", ignore_errors=True)
        shutil.rmtree(self.root / "exec", ignore_errors=True)


@dataclass
class NamespacedStack(Stack):
    """The server, a worker and the monitor, run in the private daemon's namespace."""

    enter: tuple[str, ...] = ()
    monitor: subprocess.Popen | None = None

    def _spawn(self, script: str, log_name: str) -> subprocess.Popen:
        log = open(self.data_dir / log_name, "ab")
        return subprocess.Popen([*self.enter, sys.executable, str(BIN / script)],
                                env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def start_monitor(self) -> None:
        self.monitor = self._spawn("agentainer-monitor", "monitor.log")

    def stop_monitor(self) -> None:
        self.monitor.terminate()
        self.monitor.wait(timeout=30)

    def monitor_log(self) -> str:
        return (self.data_dir / "monitor.log").read_text(errors="replace")

    def stop_all(self) -> None:
        super().stop_all()
        if self.monitor and self.monitor.poll() is None:
            self.stop_monitor()


@pytest.fixture(scope="module")
def private_docker(docker_client: docker.DockerClient,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateDocker]:
    """A private dockerd holding the echo agent's image (loaded from the main daemon)."""
    if os.geteuid() != 0:
        pytest.fail("a private dockerd needs root (make test runs as root or with sudo)")
    for tool in ("dockerd", "nsenter", "ip"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed")
    try:
        image = docker_client.images.get(ECHO_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{ECHO_IMAGE} is missing; make test builds it (make images)")
    daemon = PrivateDocker(tmp_path_factory.mktemp("dockerd"))
    try:
        daemon.create_namespace()
        daemon.start()
        client = daemon.client()
        try:
            client.images.load(image.save(named=ECHO_IMAGE))  # NOTE: reads the load's progress to its end
            client.images.get(ECHO_IMAGE)
        finally:
            client.close()
        yield daemon
    finally:
        daemon.remove_everything()


@pytest.fixture(scope="module")
def private_stack(private_docker: PrivateDocker,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[NamespacedStack]:
    redis_server = RedisServer(tmp_path_factory.mktemp("redis"), host=private_docker.host_ip)
    prefix = f"agdr{secrets.token_hex(3)}"
    data_dir = tmp_path_factory.mktemp("data")
    conf = data_dir / "empty.conf"
    conf.write_text("[agentainer]\n")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("AGENTAINER_")}
    env.update(TEST_SETTINGS, AGENTAINER_CONFIG=str(conf), AGENTAINER_REDIS_URL=redis_server.url,
               AGENTAINER_HOST=private_docker.ns_ip, AGENTAINER_PORT=str(port),
               AGENTAINER_DATA_DIR=str(data_dir), AGENTAINER_DOCKER_HOST=private_docker.url,
               AGENTAINER_NETWORK=f"{prefix}-net", AGENTAINER_INTERNAL_NETWORK=f"{prefix}-int",
               AGENTAINER_VOLUME_ROOTS=str(data_dir), AGENTAINER_RECONCILE_INTERVAL="2s",
               AGENTAINER_RESTART_BASE="500ms", AGENTAINER_RESTART_CAP="4s",
               AGENTAINER_RESTART_LIMIT="3")
    stack = NamespacedStack(f"http://{private_docker.ns_ip}:{port}", env, prefix, data_dir,
                            data_dir, f"{prefix}-net", f"{prefix}-int",
                            enter=tuple(private_docker.enter))
    try:
        redis_server.start()
        stack.start_server()
        stack.start_workers(1)
        stack.start_monitor()
        yield stack
    finally:
        stack.stop_all()
        redis_server.stop()


def three_agents(api: Api, prefix: str) -> tuple[dict, dict, dict]:
    """Deploy two agents meant to run (with and without auto-restart) and one the user
    stopped."""
    auto, plain, parked = (f"{prefix}-{role}-{secrets.token_hex(2)}"
                           for role in ("auto", "plain", "parked"))
    deployed = started(api, auto, auto_restart=True), started(api, plain), started(api, parked)
    assert api.post(f"/agents/{parked}/stop").status_code == 200
    return deployed


def agent(api: Api, name: str) -> dict:
    reply = api.get(f"/agents/{name}")
    assert reply.status_code == 200, reply.text
    return reply.json()["data"]


def queue_request(stack: NamespacedStack, name: str) -> str:
    reply = requests.post(f"{stack.url}/agent/{name}/while-docker-was-down", data=b"q",
                          timeout=30)
    assert reply.status_code == 202, reply.text
    return reply.json()["data"]["request_id"]


def assert_back(api: Api, auto: str, plain: str, parked: str, request_id: str) -> None:
    for name in (auto, plain):
        wait_for(lambda: agent(api, name)["status"] == "running", timeout=30,
                 message=f"{name} to run again")
        assert agent(api, name)["desired"] == "running"
    done = wait_for_status(api, plain, request_id, "completed", timeout=30)
    assert done["resp_status"] == 200
    assert agent(api, auto)["restarts"] == 0  # NOTE: brought up, not a restart attempt
    stopped = agent(api, parked)
    assert stopped["status"] == "stopped" and stopped["desired"] == "stopped"


def test_agents_come_back_when_docker_restarts_under_a_running_stack(
        private_docker: PrivateDocker, private_stack: NamespacedStack):
    api = Api(private_stack.url, private_stack.token)
    auto, plain, parked = three_agents(api, private_stack.prefix)
    private_docker.stop()
    request_id = queue_request(private_stack, plain["name"])
    private_docker.start()
    assert_back(api, auto["name"], plain["name"], parked["name"], request_id)


@pytest.mark.parametrize("monitor_starts", ["after Docker is back", "while Docker is down"])
def test_agents_come_back_when_the_monitor_was_down_while_docker_stopped(
        private_docker: PrivateDocker, private_stack: NamespacedStack, monitor_starts: str):
    api = Api(private_stack.url, private_stack.token)
    auto, plain, parked = three_agents(api, private_stack.prefix)
    private_stack.stop_monitor()
    private_docker.stop()
    if monitor_starts == "while Docker is down":  # NOTE: e.g. the stack at boot, before dockerd
        tried = private_stack.monitor_log().count("Docker is unreachable")
        private_stack.start_monitor()
        wait_for(lambda: private_stack.monitor_log().count("Docker is unreachable") > tried,
                 timeout=15, message="the monitor to try Docker")
        request_id = queue_request(private_stack, plain["name"])
        private_docker.start()
    else:
        private_docker.start()
        request_id = queue_request(private_stack, plain["name"])
        private_stack.start_monitor()
    assert_back(api, auto["name"], plain["name"], parked["name"], request_id)
