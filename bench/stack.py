"""The benchmark's own stack of Agentainer, and the calls bench/run.py makes to it.

A :class:`Stack` runs one source tree (this checkout, or the baseline commit the A/B
exports): a private redis-server with AOF, two ``agentainer-server`` processes sharing one
port, two ``agentainer-worker`` processes and, as supervisord.conf has it,
``agentainer-monitor``; its networks are named with a random prefix, and
:func:`clean_docker` removes what it created.
"""

import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Settings for the bench stack: the defaults, except a queue that can hold the replay run.
STACK_SETTINGS = {"AGENTAINER_QUEUE_LIMIT": "5000", "AGENTAINER_LOG_LEVEL": "WARNING"}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Stack:
    """Redis, two servers on one port (SO_REUSEPORT) and two replay workers, all ours.

    ``root`` is the source tree the programs run from: its ``bin/`` and, first on
    PYTHONPATH, its ``agentainer`` package (the venv's interpreter and libraries either way).
    """

    data_dir: Path
    root: Path = ROOT
    prefix: str = field(default_factory=lambda: f"agbench{secrets.token_hex(3)}")
    port: int = 0
    redis_port: int = 0
    env: dict = field(default_factory=dict)
    processes: list = field(default_factory=list)
    servers: list = field(default_factory=list)
    token: str = ""
    monitor: bool = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def networks(self) -> list[str]:
        return [f"{self.prefix}-net", f"{self.prefix}-internal"]

    @property
    def redis_pid(self) -> int:
        return self.processes[0].pid

    def _spawn(self, command: list[str], log_name: str) -> subprocess.Popen:
        with open(self.data_dir / log_name, "ab") as out:
            process = subprocess.Popen(command, env=self.env, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.processes.append(process)
        return process

    def start(self) -> None:
        import redis
        import requests

        from tests.helpers import free_port, wait_for

        redis_bin = shutil.which("redis-server")
        if not redis_bin:
            raise SystemExit("redis-server is not installed (make deps installs it)")
        (self.data_dir / "redis").mkdir()
        self.redis_port = free_port()
        self._spawn([redis_bin, "--bind", "127.0.0.1", "--port", str(self.redis_port),
                     "--dir", str(self.data_dir / "redis"), "--appendonly", "yes",
                     "--appendfsync", "everysec", "--save", "", "--daemonize", "no"],
                    "redis.log")
        wait_for(redis.Redis.from_url(self.redis_url).ping, timeout=10, message="redis-server")

        conf = self.data_dir / "empty.conf"
        conf.write_text("[agentainer]\n")
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTAINER_")}
        # NOTE: this redis-server, password-less, is an external Redis to the stack
        env.update(STACK_SETTINGS, AGENTAINER_CONFIG=str(conf),
                   AGENTAINER_REDIS_URL=self.redis_url, AGENTAINER_EMBEDDED_REDIS="false",
                   AGENTAINER_PORT=str(self.port),
                   AGENTAINER_DATA_DIR=str(self.data_dir),
                   AGENTAINER_NETWORK=self.networks[0],
                   AGENTAINER_INTERNAL_NETWORK=self.networks[1],
                   AGENTAINER_VOLUME_ROOTS=str(self.data_dir / "volumes"),
                   PYTHONPATH=str(self.root))
        self.env = env
        bin_dir = self.root / "bin"

        def healthy() -> bool:
            return requests.get(self.url + "/health", timeout=2).ok

        # NOTE: one after the other: both would create the networks at start otherwise
        for index in range(2):
            server = self._spawn([sys.executable, str(bin_dir / "agentainer-server")],
                                 f"server-{index}.log")
            self.servers.append(server)
            wait_for(lambda: server.poll() is None and healthy(), timeout=60,
                     message=f"agentainer-server #{index + 1}")
            if server.poll() is not None:
                raise RuntimeError(f"agentainer-server #{index + 1} exited; see "
                                   f"{self.data_dir}/server-{index}.log")
        self.token = (self.data_dir / "admin.token").read_text().strip()
        for index in range(2):
            self._spawn([sys.executable, str(bin_dir / "agentainer-worker")],
                        f"worker-{index}.log")
        if self.monitor and (bin_dir / "agentainer-monitor").exists():
            # NOTE: as supervisord.conf runs the stack (the monitor also hosts the janitor)
            self._spawn([sys.executable, str(bin_dir / "agentainer-monitor")], "monitor.log")
        time.sleep(0.5)
        dead = [p.args[-1] for p in self.processes if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{dead} exited at start; see the logs in {self.data_dir}")

    def describe(self) -> str:
        """``1 × redis-server, 2 × agentainer-server, ...``"""
        names = [Path(p.args[1]).name if "python" in Path(p.args[0]).name else
                 Path(p.args[0]).name for p in self.processes]
        return ", ".join(f"{names.count(n)} × {n}" for n in dict.fromkeys(names))

    def agent_ids(self) -> set[str]:
        import redis
        try:
            client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
            return {key.decode().rsplit(":", 1)[1]
                    for key in client.scan_iter("agentainer:agent:*")}
        except Exception as ex:  # noqa: BLE001 - cleanup goes on with the network names
            log(f"cleanup: cannot list agents from redis ({ex})")
            return set()

    def stop_processes(self) -> None:
        # servers and workers first, redis last
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
        self.processes.clear()
        self.servers.clear()

    def tear_down(self, client) -> None:
        """Remove this stack's containers and networks, then stop its processes."""
        agent_ids = self.agent_ids() if self.redis_port else set()
        try:
            clean_docker(client, self, agent_ids)
        finally:
            self.stop_processes()


def clean_docker(client, stack: Stack, agent_ids: set[str]) -> None:
    """Remove this run's containers (labelled managed) and its networks."""
    for container in client.containers.list(all=True,
                                            filters={"label": "agentainer.managed=1"}):
        networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        if container.labels.get("agentainer.id") in agent_ids or any(
                name in stack.networks for name in networks):
            try:
                container.remove(force=True, v=True)
            except Exception as ex:  # noqa: BLE001
                log(f"cleanup: cannot remove container {container.name}: {ex}")
    for network in client.networks.list(names=stack.networks):
        if network.name in stack.networks:
            try:
                network.remove()
            except Exception as ex:  # noqa: BLE001
                log(f"cleanup: cannot remove network {network.name}: {ex}")


class Api:
    def __init__(self, url: str, token: str) -> None:
        import requests
        self.url = url
        self.token = token
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, expect: int = 200, **kwargs) -> dict:
        kwargs.setdefault("timeout", 120)
        reply = self.session.request(method, self.url + path, **kwargs)
        if reply.status_code != expect:
            raise RuntimeError(f"{method} {path}: {reply.status_code} {reply.text[:500]}")
        return reply.json()["data"]

    def deploy(self, name: str, image: str, **fields) -> dict:
        return self.call("POST", "/agents", 201, json={"name": name, "image": image, **fields})


def container_ip(client, agent_id: str, network: str) -> str:
    found = client.containers.list(filters={"label": f"agentainer.id={agent_id}"})
    if not found:
        raise RuntimeError(f"no running container for {agent_id}")
    networks = found[0].attrs["NetworkSettings"]["Networks"]
    return (networks.get(network) or next(iter(networks.values())))["IPAddress"]


def wait_http(url: str, timeout: float = 30) -> None:
    import requests

    from tests.helpers import wait_for
    wait_for(lambda: requests.get(url, timeout=2).status_code == 200, timeout=timeout,
             message=url)
