"""The proxy: forwarding rules, streaming, and the journal of live requests."""

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.helpers import free_port, wait_for
from tests.stack import (
    BIN, ECHO_IMAGE, STREAM_IMAGE, Api, Stack, run_cli,
)
from tests.integration.journal_helpers import record, started, wait_for_status

MAX_BODY = 1024 * 1024          # AGENTAINER_MAX_BODY in the test stack
WAITRESS_LIMIT = MAX_BODY + 64 * 1024   # server.BODY_SLACK over it

# An agent app that tries to pass its own headers off as Agentainer's.
SPOOFING_APP = """
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("X-Agentainer-Request-Id", "req-spoofed")
        self.send_header("X-Agentainer-Idempotent-Replay", "true")
        self.send_header("X-Own", "kept")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
"""


@pytest.fixture
def echo(api: Api, name: str) -> str:
    started(api, name)
    return name


def proxied(stack: Stack, ref: str, path: str = "/", method: str = "GET",
            **kwargs) -> requests.Response:
    kwargs.setdefault("timeout", 30)
    return requests.request(method, f"{stack.url}/agent/{ref}{path}", **kwargs)


def test_forwards_method_path_query_body_and_headers(stack: Stack, echo: str, api: Api):
    reply = proxied(stack, echo, "/some/path%20x", "PUT", params={"a": "1", "b": "x y"},
                    data=b"payload", headers={"X-Custom": "yes", "Connection": "keep-alive, X-Drop",
                                             "X-Drop": "hop", "X-Agentainer-Replay": "true",
                                             "X-Forwarded-For": "6.6.6.6"})
    assert reply.status_code == 200
    echoed = reply.json()
    assert (echoed["method"], echoed["path"], echoed["body"]) == ("PUT", "/some/path%20x",
                                                                   "payload")
    assert echoed["query"] == "a=1&b=x+y"
    headers = {k.lower(): v for k, v in echoed["headers"]}
    assert headers["x-custom"] == "yes"
    assert "x-drop" not in headers and "x-agentainer-replay" not in headers
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"].startswith("127.0.0.1")
    request_id = reply.headers["X-Agentainer-Request-Id"]
    assert headers["x-agentainer-request-id"] == request_id
    stored = record(api, echo, request_id)
    assert stored["status"] == "completed" and stored["attempts"] == 1
    assert stored["resp_status"] == 200 and json.loads(stored["resp_body"]) == echoed
    assert (stored["method"], stored["path"], stored["query"]) == ("PUT", "/some/path%20x",
                                                                   "a=1&b=x+y")


def test_agent_reached_by_id_and_at_its_root(stack: Stack, api: Api, name: str):
    agent = started(api, name)
    for path in (f"/agent/{agent['id']}", f"/agent/{agent['id']}/", f"/agent/{name}"):
        reply = requests.get(stack.url + path, timeout=10)
        assert reply.status_code == 200 and reply.json()["path"] == "/", path


def test_agentainer_tokens_are_not_forwarded_but_other_auth_is(stack: Stack, echo: str):
    admin = proxied(stack, echo, headers={"Authorization": f"Bearer {stack.token}"})
    assert "authorization" not in {k.lower() for k, _ in admin.json()["headers"]}
    own = proxied(stack, echo, headers={"Authorization": "Bearer the-apps-own-key"})
    assert ["Authorization", "Bearer the-apps-own-key"] in own.json()["headers"]


def test_secrets_are_shown_redacted_from_the_journal(stack: Stack, echo: str, api: Api):
    reply = proxied(stack, echo, headers={"Authorization": "Bearer app-secret",
                                          "Cookie": "session=abc", "X-Api-Key": "k"})
    stored = record(api, echo, reply.headers["X-Agentainer-Request-Id"])
    headers = dict(stored["headers"])
    assert headers["Authorization"] == headers["Cookie"] == headers["X-Api-Key"] == "[redacted]"


def test_agent_status_and_headers_pass_through(stack: Stack, echo: str):
    reply = proxied(stack, echo, headers={"X-Echo-Status": "418"})
    assert reply.status_code == 418
    assert reply.headers["Server"].startswith("echo-agent")
    assert "X-Agentainer-Request-Id" in reply.headers


def test_unknown_agent_is_404_with_a_request_id(stack: Stack):
    reply = proxied(stack, "nobody-at-all")
    assert reply.status_code == 404 and reply.json()["error"] == "agent_not_found"
    assert reply.headers["X-Agentainer-Request-Id"].startswith("req-")


def test_private_agent_needs_its_token(stack: Stack, api: Api, name: str):
    token = "private-token-" + name
    started_agent = api.deploy(name, start=True, token=token, private=True)
    assert proxied(stack, name).status_code == 401
    assert proxied(stack, name, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert proxied(stack, name, headers={"Authorization": f"Bearer {stack.token}"}
                   ).status_code == 401
    reply = proxied(stack, name, "/x", headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code in (200, 202), reply.text
    assert started_agent["private"] is True


def test_agents_cannot_spoof_agentainer_headers(stack: Stack, api: Api, name: str):
    app_dir = stack.volume_root / name
    app_dir.mkdir()
    (app_dir / "app.py").write_text(SPOOFING_APP)
    started(api, name, volumes=[{"host_path": str(app_dir), "container_path": "/app",
                                 "read_only": True}])
    key = {"Idempotency-Key": f"spoof-{name}"}
    for reply in (proxied(stack, name, "/", headers=key), proxied(stack, name, "/", headers=key)):
        assert reply.status_code == 200 and reply.headers["X-Own"] == "kept"
        assert reply.headers["X-Agentainer-Request-Id"].startswith("req-")
        assert "spoofed" not in reply.headers["X-Agentainer-Request-Id"]
    assert "X-Agentainer-Idempotent-Replay" not in proxied(stack, name, "/").headers
    stored = record(api, name, reply.headers["X-Agentainer-Request-Id"])
    assert [h for h, _ in stored["resp_headers"] if h.lower().startswith("x-agentainer")] == []


def raw_exchange(stack: Stack, head: bytes, chunks: Iterator[bytes] = iter(())) -> bytes:
    """Send a request head, then body chunks until the server answers; return the answer."""
    host, port = stack.url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        for chunk in chunks:
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except BlockingIOError:
                pass
            sock.setblocking(True)
            sock.sendall(chunk)
            sock.setblocking(False)
        sock.setblocking(True)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return answer


def test_a_body_far_over_the_cap_is_refused_before_it_is_read(stack: Stack, echo: str):
    started_at = time.monotonic()
    answer = raw_exchange(stack, f"POST /agent/{echo}/huge HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                 f"Content-Length: {512 * 1024 ** 2}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert time.monotonic() - started_at < 5


def test_a_chunked_body_over_the_cap_is_refused_as_it_arrives(stack: Stack, echo: str):
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(256):                    # up to 16 MiB; the limit is about 1 MiB
            sent += 64 * 1024
            yield b"10000\r\n" + b"x" * (64 * 1024) + b"\r\n"
            time.sleep(0.005)

    answer = raw_exchange(stack, f"POST /agent/{echo}/huge HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                 "Transfer-Encoding: chunked\r\n\r\n".encode(), chunks())
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert sent < 8 * WAITRESS_LIMIT   # refused on arrival (socket buffers hold some)


def test_body_over_the_cap_is_413_and_not_stored(stack: Stack, echo: str, api: Api):
    reply = proxied(stack, echo, "/big", "POST", data=b"x" * (MAX_BODY + 1))
    assert reply.status_code == 413 and reply.json()["error"] == "body_too_large"
    listed = api.get(f"/agents/{echo}/requests").json()["data"]["requests"]
    assert all(r["path"] != "/big" for r in listed)


def test_response_capture_is_capped_and_flagged(stack: Stack, echo: str, api: Api):
    body = b"y" * (200 * 1024)
    reply = proxied(stack, echo, "/large", "POST", data=body)
    assert reply.status_code == 200 and len(reply.content) > len(body)  # client gets it all
    stored = record(api, echo, reply.headers["X-Agentainer-Request-Id"])
    assert stored["resp_truncated"] is True
    assert len(stored["resp_body"]) == 64 * 1024


def test_persistence_off(stack: Stack, api: Api, name: str):
    api.deploy(name, persist=False)
    down = proxied(stack, name)
    assert down.status_code == 503 and down.headers["Retry-After"]
    assert down.json()["error"] == "agent_unavailable"
    assert api.post(f"/agents/{name}/start").status_code == 200
    reply = proxied(stack, name, "/not-journaled", timeout=30)
    for _ in range(50):
        if reply.status_code == 200:
            break
        time.sleep(0.2)
        reply = proxied(stack, name, "/not-journaled")
    assert reply.status_code == 200
    assert api.get(f"/agents/{name}/requests").json()["data"]["total"] == 0


def test_idempotency_key(stack: Stack, echo: str, api: Api):
    key = {"Idempotency-Key": f"order-{echo}"}
    first = proxied(stack, echo, "/pay", "POST", data=b"once", headers=key)
    again = proxied(stack, echo, "/pay", "POST", data=b"once", headers=key)
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["X-Agentainer-Idempotent-Replay"] == "true"
    assert again.headers["X-Agentainer-Request-Id"] == first.headers["X-Agentainer-Request-Id"]
    different = proxied(stack, echo, "/pay", "POST", data=b"twice", headers=key)
    assert different.status_code == 422 and different.json()["error"] == "idempotency_mismatch"
    listed = api.get(f"/agents/{echo}/requests").json()["data"]["requests"]
    assert [r["path"] for r in listed].count("/pay") == 1


def test_idempotency_key_with_a_truncated_response_is_409(stack: Stack, echo: str, api: Api):
    key = {"Idempotency-Key": f"large-{echo}"}
    body = b"y" * (200 * 1024)                  # the echo is over capture_limit (64k)
    first = proxied(stack, echo, "/large", "POST", data=body, headers=key)
    assert first.status_code == 200 and len(first.content) > len(body)
    again = proxied(stack, echo, "/large", "POST", data=body, headers=key)
    assert again.status_code == 409
    assert again.json()["error"] == "idempotency_response_unavailable"
    request_id = first.headers["X-Agentainer-Request-Id"]
    assert again.headers["X-Agentainer-Request-Id"] == request_id
    assert f"/requests/{request_id}" in again.json()["message"]


def test_idempotency_key_in_flight_is_409(stack: Stack, echo: str):
    key = {"Idempotency-Key": f"slow-{echo}", "X-Echo-Delay": "1.5"}
    slow = threading.Thread(target=proxied, args=(stack, echo, "/slow"),
                            kwargs={"headers": key})
    slow.start()
    time.sleep(0.5)
    reply = proxied(stack, echo, "/slow", headers=key)
    slow.join()
    assert reply.status_code == 409 and reply.json()["error"] == "idempotency_in_progress"


def test_sse_streams_token_by_token(stack: Stack, api: Api, name: str):
    started(api, name, image=STREAM_IMAGE)
    body = {"model": "m", "stream": True, "token_delay": 0.3,
            "messages": [{"role": "user", "content": "one two three four"}]}
    sent = time.monotonic()
    arrivals = []
    with requests.post(f"{stack.url}/agent/{name}/v1/chat/completions", json=body, stream=True,
                       timeout=30) as reply:
        assert reply.headers["Content-Type"].startswith("text/event-stream")
        for line in reply.iter_lines():
            if line.startswith(b"data: {"):
                arrivals.append(time.monotonic() - sent)
    assert len(arrivals) >= 5
    assert arrivals[0] < 0.25, arrivals          # the first token is not held back
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:-1])]
    assert all(0.2 < gap < 0.5 for gap in gaps), gaps


def test_client_disconnect_does_not_cut_the_agent_off(stack: Stack, api: Api, name: str):
    started(api, name, image=STREAM_IMAGE)
    body = json.dumps({"model": "m", "stream": True, "tokens": 100, "token_delay": 0.05,
                       "messages": [{"role": "user", "content": "x"}]}).encode()
    host, port = stack.url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /agent/" + name.encode() + b"/v1/chat/completions HTTP/1.1\r\n"
                     b"Host: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = sock.recv(4096).decode()
    request_id = next(line.split(": ")[1] for line in head.split("\r\n")
                      if line.lower().startswith("x-agentainer-request-id"))
    # NOTE: the proxy reads the agent's answer to its end (5 s of tokens) and keeps it whole
    stored = wait_for_status(api, name, request_id, "completed", timeout=30)
    assert "client disconnected" in stored["note"] and stored["resp_truncated"] is False
    assert stored["resp_body"].rstrip().endswith("data: [DONE]")
    assert stored["resp_body"].count('"content":"tok') == 100


def test_requests_api_and_cli(stack: Stack, echo: str, api: Api):
    reply = proxied(stack, echo, "/listed", "POST", data=b"hello")
    request_id = reply.headers["X-Agentainer-Request-Id"]
    page = api.get(f"/agents/{echo}/requests", params={"status": "completed"}).json()["data"]
    assert request_id in [r["id"] for r in page["requests"]]
    assert api.get(f"/agents/{echo}/requests", params={"status": "bogus"}).status_code == 400
    assert api.get(f"/agents/{echo}/requests/req-0000").status_code == 404
    assert api.delete(f"/agents/{echo}/requests/{request_id}").status_code == 409
    listing = run_cli(stack, "requests", echo)
    assert listing.returncode == 0 and request_id in listing.stdout and "/listed" in listing.stdout
    shown = run_cli(stack, "requests", "show", echo, request_id)
    assert "completed" in shown.stdout and "hello" in shown.stdout
    as_json = json.loads(run_cli(stack, "requests", "show", echo, request_id, "--json").stdout)
    assert as_json["id"] == request_id and as_json["resp_status"] == 200
    assert run_cli(stack, "requests", "cancel", echo, request_id).returncode == 4
    assert run_cli(stack, "requests", "show", echo).returncode == 2


def test_removing_an_agent_removes_its_journal(stack: Stack, echo: str, api: Api, redis_url):
    import redis
    proxied(stack, echo, "/gone")
    agent_id = api.get(f"/agents/{echo}").json()["data"]["id"]
    assert api.delete(f"/agents/{echo}").status_code == 200
    client = redis.Redis.from_url(redis_url)
    assert not list(client.scan_iter(f"agentainer:*{agent_id}*"))


def test_deploying_through_the_image_of_a_missing_agent_is_unaffected(api: Api, name: str):
    assert api.deploy(name, image=ECHO_IMAGE)["status"] == "created"


@pytest.fixture
def small_server(stack: Stack) -> Iterator[str]:
    """A second server process on the same Redis with 4 threads, 2 kept for the API."""
    port = free_port()
    env = {**stack.env, "AGENTAINER_PORT": str(port), "AGENTAINER_THREADS": "4",
           "AGENTAINER_API_THREADS": "2", "AGENTAINER_FOLLOW_LIMIT": "1"}
    with open(stack.data_dir / "small-server.log", "ab") as log:
        server = subprocess.Popen([sys.executable, str(BIN / "agentainer-server")], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(url + "/health", timeout=2).ok, timeout=30,
                 message="the small server's /health")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=15)


def test_long_streams_cannot_starve_the_api(stack: Stack, api: Api, name: str,
                                            small_server: str):
    started(api, name, image=STREAM_IMAGE)
    body = {"model": "m", "stream": True, "tokens": 200, "token_delay": 0.1,
            "messages": [{"role": "user", "content": "x"}]}
    url = f"{small_server}/agent/{name}/v1/chat/completions"
    streams = [requests.post(url, json=body, stream=True, timeout=30) for _ in range(2)]
    try:
        assert [s.status_code for s in streams] == [200, 200]
        busy = requests.post(url, json=body, timeout=10)
        assert busy.status_code == 503 and busy.json()["error"] == "proxy_busy"
        assert busy.headers["Retry-After"]
        listed = requests.get(f"{small_server}/agents", timeout=10,
                              headers={"Authorization": f"Bearer {stack.token}"})
        assert listed.status_code == 200
        assert all(s.raw.read(16) for s in streams)  # still streaming
    finally:
        for stream in streams:
            stream.close()
    wait_for(lambda: requests.get(f"{small_server}/agent/{name}/health", timeout=10
                                  ).status_code == 200, timeout=20, message="a free slot")
