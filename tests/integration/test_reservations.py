"""No name reservation outlives its deploy: a server killed mid-deploy (issue 8).

A second server process talks to Docker through a loopback socket proxy that holds
``POST /containers/create`` unanswered, so the deploy is caught between reserving the name
and recording the agent; the server is then killed with SIGKILL. The stack's own server
(whose janitor reaps dead processes' work) must free the name within seconds.
"""

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import wait_for
from tests.stack import Api, Stack, make_stack

DOCKER_SOCKET = "/var/run/docker.sock"


class StallingDockerProxy:
    """A unix-socket proxy to the Docker daemon that never forwards a container create."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stalled = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(16)
        self._open: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            daemon = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            daemon.connect(DOCKER_SOCKET)
            self._open += [client, daemon]
            threading.Thread(target=self._pipe, args=(client, daemon, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(daemon, client, False),
                             daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if upstream and b"/containers/create" in chunk and chunk.startswith(b"POST"):
                    self.stalled.set()
                    return  # NOTE: never answered: the deploy hangs in Docker's create
                sink.sendall(chunk)
        except OSError:
            return

    def close(self) -> None:
        for sock in self._open:
            sock.close()


@pytest.fixture
def stalling_server(stack: Stack, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[tuple[Stack, StallingDockerProxy]]:
    """A second server on the stack's Redis and admin token, with Docker behind the proxy."""
    proxy = StallingDockerProxy(tmp_path_factory.mktemp("docker-proxy") / "docker.sock")
    second = make_stack(stack.env["AGENTAINER_REDIS_URL"], stack.data_dir, stack.volume_root,
                        stack.prefix, AGENTAINER_DOCKER_HOST=f"unix://{proxy.path}")
    second.start_server()
    try:
        yield second, proxy
    finally:
        second.stop_all()
        proxy.close()


def test_a_server_killed_mid_deploy_releases_the_name(stack: Stack, api: Api, name: str,
                                                      stalling_server):
    second, proxy = stalling_server

    def deploy_through_the_stalling_server() -> None:
        with pytest.raises(requests.ConnectionError):  # NOTE: it is killed mid-deploy
            requests.post(f"{second.url}/agents", timeout=60,
                          json={"name": name, "image": "agentainer/echo-agent"},
                          headers={"Authorization": f"Bearer {second.token}"})

    deploy = threading.Thread(target=deploy_through_the_stalling_server)
    deploy.start()
    assert proxy.stalled.wait(30), "the deploy never reached Docker's create"
    reply = api.post("/agents", json={"name": name, "image": "agentainer/echo-agent"})
    assert reply.status_code == 409 and reply.json()["error"] == "name_taken"
    second.kill_server()
    killed = time.monotonic()
    deploy.join(timeout=30)
    # NOTE: the dead server's heartbeat expires (liveness_timeout, 5 s); the stack server's
    # janitor then releases what it had reserved
    created = wait_for(lambda: (r := api.post("/agents", json={
        "name": name, "image": "agentainer/echo-agent"})).status_code == 201 and r,
        timeout=30, interval=0.5, message="the name to be released")
    assert time.monotonic() - killed < 15
    assert created.json()["data"]["name"] == name
    assert api.delete(f"/agents/{name}").status_code == 200
