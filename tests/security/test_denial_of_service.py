"""No client or agent can take the control plane down.

Each test is one attack: a flood of half-open connections from inside an agent, follows of a
silent agent's logs, slow requests to one agent, and requests (or their absence) trickling in
on loopback. Meanwhile ``/health`` and the API answer within 1 s, and another agent is
reached through the proxy.

The tests run a server of their own, with short deadlines and small caps (see ``SETTINGS``).
"""

import os
import re
import resource
import secrets
import selectors
import socket
import textwrap
import threading
import time
from collections.abc import Iterator

import docker
import pytest
import requests

from tests.helpers import wait_for
from tests.integration.journal_helpers import started
from tests.stack import Api, Stack, _clean_docker, make_stack

SETTINGS = {
    "AGENTAINER_HEADER_TIMEOUT": "1s", "AGENTAINER_BODY_MIN_RATE": "1k",
    "AGENTAINER_IDLE_TIMEOUT": "2s", "AGENTAINER_AGENT_MAX_INFLIGHT": "8",
    "AGENTAINER_FOLLOW_LIMIT": "4", "AGENTAINER_GATEWAY_CONNECTION_LIMIT": "1000",
    "AGENTAINER_QUEUE_LIMIT": "400",
}
FOLLOW_LIMIT, MAX_INFLIGHT, GATEWAY_LIMIT = 4, 8, 1000
WITHIN = 1.0  # seconds: the control plane's answers, under attack

# Run inside the attacker's container: open COUNT connections to the proxy on the gateway,
# send nothing, hold them HOLD seconds.
HALF_OPEN = textwrap.dedent("""
    import os, resource, socket, sys, time, urllib.parse
    count, hold = int(sys.argv[1]), float(sys.argv[2])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    url = urllib.parse.urlsplit(os.environ["AGENTAINER_PROXY_URL"])
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex((url.hostname, url.port))
        held.append(sock)
    print("opened", len(held), flush=True)
    time.sleep(hold)
""")


@pytest.fixture(scope="module")
def dos_stack(redis_url: str, docker_client: docker.DockerClient,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A server (and one replay worker) with short deadlines and small caps."""
    prefix = f"agdos{secrets.token_hex(3)}"
    stack = make_stack(redis_url, tmp_path_factory.mktemp("dos-data"),
                       tmp_path_factory.mktemp("dos-volumes"), prefix, **SETTINGS)
    try:
        stack.start_server()
        stack.start_workers(1)
        yield stack
    finally:
        stack.stop_all()
        _clean_docker(docker_client, prefix, redis_url, only_prefix=True)


@pytest.fixture(scope="module")
def dos_api(dos_stack: Stack) -> Api:
    return Api(dos_stack.url, dos_stack.token)


@pytest.fixture(scope="module")
def bystander(dos_api: Api, dos_stack: Stack) -> str:
    """Another agent, which must stay reachable through the proxy."""
    name = f"{dos_stack.prefix}-bystander"
    started(dos_api, name)
    return name


@pytest.fixture(scope="module", autouse=True)
def enough_files() -> None:
    """Let this process hold a few hundred sockets at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))


def assert_control_plane_answers(api: Api, bystander: str) -> None:
    """``/health``, the API and the proxy to ``bystander`` answer within 1 s."""
    for path, headers in (("/health", {}), ("/agents", api.session.headers),
                          (f"/agent/{bystander}/health", {})):
        began = time.monotonic()
        reply = requests.get(api.url + path, headers=headers, timeout=WITHIN)
        elapsed = time.monotonic() - began
        assert reply.status_code == 200, (path, reply.status_code, reply.text)
        assert elapsed < WITHIN, (path, elapsed)


def connect(stack: Stack) -> socket.socket:
    host, port = stack.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def closed_by_server(sock: socket.socket) -> bool:
    """Return whether the server closed ``sock`` (without waiting)."""
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def send_all(socks: list[socket.socket], data: bytes) -> None:
    for sock in socks:
        sock.sendall(data)


def statuses(socks: list[socket.socket], *, timeout: float,
             expect: int | None = None) -> dict[socket.socket, bytes]:
    """Read each socket's answer until its status line and headers are in, or ``timeout``,
    or ``expect`` answers are in; return the heads received (those that got none are left
    out)."""
    heads: dict[socket.socket, bytes] = {}
    received = {sock: b"" for sock in socks}
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        wanted = len(socks) if expect is None else expect
        while len(heads) < wanted and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                sock = key.fileobj
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    chunk = b""
                received[sock] += chunk
                if b"\r\n\r\n" in received[sock] or not chunk:
                    heads[sock] = received[sock]
                    selector.unregister(sock)
    return heads


def status_of(head: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", head)
    return int(match.group(1)) if match else 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_half_open_connections_from_an_agent_leave_the_api_up(
        dos_api: Api, dos_stack: Stack, bystander: str, docker_client: docker.DockerClient):
    attacker = started(dos_api, f"{dos_stack.prefix}-flood")
    container = docker_client.containers.get(f"agentainer-{attacker['id']}")
    count, hold = 2200, 5
    _, output = container.exec_run(["python3", "-c", HALF_OPEN, str(count), str(hold)],
                                   stream=True)
    line = b""
    while not line.endswith(b"\n"):
        line += next(output)
    assert line.decode().split() == ["opened", str(count)]
    # the server holds its gateways' connection limit: agents cannot open more
    wait_for(lambda: open_fds(dos_stack.server.pid) >= GATEWAY_LIMIT, timeout=5,
             message="the flood to reach the server")
    for _ in range(5):
        assert_control_plane_answers(dos_api, bystander)
    for _ in output:  # NOTE: the script ends after `hold` seconds
        pass


def test_follows_on_a_silent_agent_are_capped_and_released(
        dos_api: Api, dos_stack: Stack, bystander: str):
    silent = started(dos_api, f"{dos_stack.prefix}-silent")
    follow = (f"GET /agents/{silent['id']}/logs?follow=true&tail=0 HTTP/1.1\r\n"
              f"Host: 127.0.0.1\r\nAuthorization: Bearer {dos_stack.token}\r\n\r\n").encode()
    socks = [connect(dos_stack) for _ in range(330)]
    try:
        send_all(socks, follow)
        heads = statuses(socks, timeout=10, expect=len(socks) - FOLLOW_LIMIT)
        # the silent follows send nothing (not even headers) until the log has a line
        assert len(heads) == len(socks) - FOLLOW_LIMIT
        assert statuses([s for s in socks if s not in heads], timeout=1) == {}
        assert {status_of(head) for head in heads.values()} == {503}
        assert all(b"Retry-After: 5" in head for head in heads.values())
        assert_control_plane_answers(dos_api, bystander)
    finally:
        for sock in socks:
            sock.close()

    def follows_admitted_again() -> bool:
        """FOLLOW_LIMIT new follows stream the agent's next log line."""
        fresh = [connect(dos_stack) for _ in range(FOLLOW_LIMIT)]
        try:
            send_all(fresh, follow)
            if statuses(fresh, timeout=0.5):
                return False  # NOTE: a 503: an old follow is still held
            dos_api.get(f"/agent/{silent['id']}/after-the-clients-left")
            heads = statuses(fresh, timeout=5)
            return len(heads) == FOLLOW_LIMIT and all(
                status_of(head) == 200 for head in heads.values())
        finally:
            for sock in fresh:
                sock.close()

    wait_for(follows_admitted_again, timeout=15, interval=0.5,
             message="the follows of clients that left to be released")


def test_slow_requests_to_one_agent_do_not_starve_another(
        dos_api: Api, dos_stack: Stack, bystander: str):
    slow = started(dos_api, f"{dos_stack.prefix}-slow")
    request = (f"GET /agent/{slow['id']}/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               "X-Echo-Delay: 2\r\nConnection: close\r\n\r\n").encode()
    socks = [connect(dos_stack) for _ in range(300)]
    try:
        send_all(socks, request)
        for _ in range(3):  # NOTE: while the agent's slow answers hold its threads (2 s)
            assert_control_plane_answers(dos_api, bystander)
        heads = statuses(socks, timeout=15)
        assert len(heads) == len(socks)
        counts = {code: sum(status_of(h) == code for h in heads.values())
                  for code in (200, 202, 503)}
        assert sum(counts.values()) == len(socks), counts
        # the agent holds at most agent_max_inflight threads; past it, journaled requests
        # wait in its queue; what the burst finds with every proxy thread busy is refused
        # (how many of each depends on the machine's speed: each kind is only counted)
        assert counts[200] >= 1 and counts[202] >= 1, counts
        assert all(b"Location: /agents/" in h for h in heads.values() if status_of(h) == 202)
        assert all(b'"proxy_busy"' in h for h in heads.values() if status_of(h) == 503)
    finally:
        for sock in socks:
            sock.close()
        dos_api.delete(f"/agents/{slow['id']}")  # NOTE: drops its queue


def trickle(sock: socket.socket, byte: bytes, stop: threading.Event) -> None:
    """Send ``byte`` every 0.3 s until stopped or the server closes ``sock``."""
    while not stop.wait(0.3):
        try:
            sock.send(byte)
        except OSError:
            return


def assert_cut_off_while_trickling(dos_api: Api, dos_stack: Stack, bystander: str,
                                   head: bytes, byte: bytes) -> None:
    """Send ``head`` on 20 connections, then a ``byte`` every 0.3 s on each: the server
    closes them all (never idle: it is their deadline), answering others meanwhile."""
    socks = [connect(dos_stack) for _ in range(20)]
    stop = threading.Event()
    try:
        send_all(socks, head)
        threads = [threading.Thread(target=trickle, args=(sock, byte, stop), daemon=True)
                   for sock in socks]
        for thread in threads:
            thread.start()
        assert_control_plane_answers(dos_api, bystander)
        wait_for(lambda: all(closed_by_server(sock) for sock in socks), timeout=10,
                 message="the server to cut the slow requests off")
        assert_control_plane_answers(dos_api, bystander)
    finally:
        stop.set()
        for sock in socks:
            sock.close()


def test_slowloris_headers_are_cut_off(dos_api: Api, dos_stack: Stack, bystander: str):
    assert_cut_off_while_trickling(dos_api, dos_stack, bystander,
                                   b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", b"a")


def test_slow_body_is_cut_off(dos_api: Api, dos_stack: Stack, bystander: str):
    head = (f"POST /agent/{bystander}/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Length: 100000\r\n\r\n").encode()
    assert_cut_off_while_trickling(dos_api, dos_stack, bystander, head, b"a")


def test_idle_connection_is_closed(dos_api: Api, dos_stack: Stack, bystander: str):
    fresh = [connect(dos_stack) for _ in range(20)]
    kept_alive = [connect(dos_stack) for _ in range(20)]
    try:
        send_all(kept_alive, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        heads = statuses(kept_alive, timeout=5)
        assert [status_of(head) for head in heads.values()] == [200] * len(kept_alive)
        assert_control_plane_answers(dos_api, bystander)
        wait_for(lambda: all(closed_by_server(sock) for sock in fresh + kept_alive),
                 timeout=10, message="the server to close idle connections")
    finally:
        for sock in fresh + kept_alive:
            sock.close()
