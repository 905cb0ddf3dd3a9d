"""Every kind of answer an agent gives ends its journal record exactly once.

One agent app (stdlib, bind-mounted over the echo image's /app) answers oddly on purpose:
bodiless statuses, interim 1xx, bodies of every length, headers no proxy may pass on. It
counts the deliveries of each request ID, so each test checks the agent got the request
exactly as many times as the record says it was attempted.
"""

import secrets
import socket
from collections.abc import Iterator

import pytest
import requests

from tests.stack import TEST_SETTINGS, Api, Stack
from tests.integration.journal_helpers import started, wait_for_status

CAPTURE_LIMIT = 64 * 1024                               # AGENTAINER_CAPTURE_LIMIT
MAX_ATTEMPTS = int(TEST_SETTINGS["AGENTAINER_MAX_ATTEMPTS"])
DONE_WITHIN = 5.0   # NOTE: well under the 12 s lease: a record ended by its answer, not a sweep

ODD_APP = r'''
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SEEN = {}
LOCK = threading.Lock()
# Answers (200, body "ok") carrying header lines no proxy may pass on.
BAD = {
    "name": b"X(Bad): 1\r\nContent-Length: 2\r\n",
    "newline": b"X-Folded: one\n two\r\nContent-Length: 2\r\n",
    "nul": b"X-Nul: a\x00b\r\nContent-Length: 2\r\n",
    "length": b"Content-Length: 2x\r\nConnection: close\r\n",
    "lengths": b"Content-Length: 2\r\nContent-Length: 2\r\n",
}
# Hop-by-hop headers (waitress refuses "Trailers"), and a Content-Length that
# Transfer-Encoding overrides: all dropped, the answer passes.
DROPPED = (b"Trailers: x\r\nTrailer: X-T\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\n"
           b"Transfer-Encoding: chunked\r\nContent-Length: 99\r\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def count(self):
        rid = self.headers.get("X-Agentainer-Request-Id", "")
        with LOCK:
            SEEN[rid] = SEEN.get(rid, 0) + 1

    def answer(self, status, body=b"", *headers):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)

    def chunked(self, parts, delay=0.0):
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
        for part in parts:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            time.sleep(delay)
        self.wfile.write(b"0\r\n\r\n")

    def do_HEAD(self):
        self.count()
        self.answer(200, b"hello", ("Content-Type", "text/plain"))

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.count()
        self.answer(200, body)

    def do_GET(self):
        route, _, arg = self.path[1:].partition("/")
        if route == "health":
            return self.answer(200, b"ok")
        if route == "seen":
            return self.answer(200, json.dumps(SEEN.get(arg, 0)).encode())
        self.count()
        if route == "status":
            self.answer(int(arg), b"", ("ETag", '"v1"'))
        elif route == "interim":
            for code in arg.split(","):
                self.wfile.write(b"HTTP/1.1 %s Interim\r\nLink: </a.css>; rel=preload\r\n\r\n"
                                 % code.encode())
            self.answer(200, b"final")
        elif route == "bytes":
            self.answer(200, b"b" * int(arg))
        elif route == "chunked":
            size = int(arg)
            self.chunked([b"c" * min(1000, size - at) for at in range(0, size, 1000)])
        elif route == "drip":
            try:
                self.chunked([b"data: %d\n\n" % n for n in range(400)], delay=0.05)
            except OSError:
                self.close_connection = True
        elif route == "dropped":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n" + DROPPED + b"\r\n2\r\nok\r\n0\r\n\r\n")
        elif route == "bad":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n" + BAD[arg] + b"\r\nok")
            self.close_connection = arg == "length"
        elif route == "switch":
            self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                             b"Upgrade: x\r\n\r\n")
            self.close_connection = True


ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
'''


@pytest.fixture(scope="module")
def agent(stack: Stack) -> Iterator[str]:
    """The odd agent, deployed once for this module and removed after it."""
    api = Api(stack.url, stack.token)
    name = f"{stack.prefix}-odd-{secrets.token_hex(2)}"
    app_dir = stack.volume_root / name
    app_dir.mkdir()
    (app_dir / "app.py").write_text(ODD_APP)
    # NOTE: unordered: a failed attempt here queues its request again, which an ordered
    # agent's next live request would wait behind
    started(api, name, ordered=False,
            volumes=[{"host_path": str(app_dir), "container_path": "/app", "read_only": True}])
    yield name
    api.delete(f"/agents/{name}")


def get(stack: Stack, agent: str, path: str, method: str = "GET",
        **kwargs) -> requests.Response:
    kwargs.setdefault("timeout", 30)
    return requests.request(method, f"{stack.url}/agent/{agent}{path}", **kwargs)


def deliveries(stack: Stack, agent: str, request_id: str) -> int:
    """How many times the agent received the request (also proves the pooled upstream
    connection is still sound after the odd answer: this goes out on it)."""
    reply = get(stack, agent, f"/seen/{request_id}")
    assert reply.status_code == 200, reply.text
    return reply.json()


def completed_once(stack: Stack, api: Api, agent: str, request_id: str) -> dict:
    """Assert the answer completed the record, on its first and only delivery."""
    stored = wait_for_status(api, agent, request_id, "completed", timeout=DONE_WITHIN)
    assert stored["attempts"] == 1, stored
    assert deliveries(stack, agent, request_id) == 1
    return stored


def failed_attempts(stack: Stack, api: Api, agent: str, reply: requests.Response) -> dict:
    """Assert an unpassable answer: 502 with the request ID, then the failed-attempt rule
    (queued again and replayed, each attempt counted, failed after max_attempts)."""
    assert reply.status_code == 502, reply.text
    assert reply.json()["error"] == "agent_bad_response"
    request_id = reply.headers["X-Agentainer-Request-Id"]
    assert reply.json()["data"]["request_id"] == request_id
    stored = wait_for_status(api, agent, request_id, "failed", timeout=30)
    assert stored["attempts"] == MAX_ATTEMPTS and "cannot pass on" in stored["error"], stored
    assert deliveries(stack, agent, request_id) == MAX_ATTEMPTS
    return stored


def rid(reply: requests.Response) -> str:
    return reply.headers["X-Agentainer-Request-Id"]


def test_head_completes_its_record_and_its_key_replays(stack: Stack, api: Api, agent: str):
    key = {"Idempotency-Key": f"head-{secrets.token_hex(4)}"}
    reply = get(stack, agent, "/page", "HEAD", headers=key)
    assert reply.status_code == 200 and reply.content == b""
    assert reply.headers["Content-Length"] == "5"       # the agent's, for the GET's body
    stored = completed_once(stack, api, agent, rid(reply))
    assert (stored["resp_status"], stored["resp_body"], stored["resp_truncated"]) == (
        200, "", False)
    again = get(stack, agent, "/page", "HEAD", headers=key)
    assert again.status_code == 200 and again.headers["X-Agentainer-Idempotent-Replay"] == "true"
    assert rid(again) == rid(reply) and deliveries(stack, agent, rid(reply)) == 1


def test_expect_100_continue_gets_the_final_answer(stack: Stack, api: Api, agent: str):
    host, port = stack.url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /agent/{agent}/echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5"
                     "\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"hello")
        answer = b""
        while data := sock.recv(65536):
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b"hello", answer
    request_id = next(line.split(b": ", 1)[1].decode() for line in head.split(b"\r\n")
                      if line.lower().startswith(b"x-agentainer-request-id"))
    assert completed_once(stack, api, agent, request_id)["resp_body"] == "hello"


@pytest.mark.parametrize("codes", ["102", "103", "100,103,102"])
def test_interim_answers_are_skipped_for_the_final_one(stack: Stack, api: Api, agent: str,
                                                      codes: str):
    reply = get(stack, agent, f"/interim/{codes}")
    assert reply.status_code == 200 and reply.content == b"final"
    stored = completed_once(stack, api, agent, rid(reply))
    assert stored["resp_status"] == 200 and stored["resp_body"] == "final"


@pytest.mark.parametrize("code", [204, 304])
def test_a_bodiless_status_completes_its_record(stack: Stack, api: Api, agent: str, code: int):
    reply = get(stack, agent, f"/status/{code}")
    assert reply.status_code == code and reply.content == b""
    assert reply.headers["ETag"] == '"v1"'
    stored = completed_once(stack, api, agent, rid(reply))
    assert stored["resp_status"] == code and stored["resp_body"] == ""


@pytest.mark.parametrize("framing, size", [
    ("bytes", 0), ("bytes", CAPTURE_LIMIT), ("bytes", CAPTURE_LIMIT + 1),
    ("bytes", 5 * 1024 * 1024), ("chunked", 0), ("chunked", 2500), ("chunked", CAPTURE_LIMIT),
    ("chunked", 150_000)])
def test_a_body_of_any_length_and_framing_completes_once(stack: Stack, api: Api, agent: str,
                                                         framing: str, size: int):
    """``bytes`` answers with a Content-Length, ``chunked`` without one."""
    fill = framing[0]
    reply = get(stack, agent, f"/{framing}/{size}")
    assert reply.status_code == 200 and reply.content == fill.encode() * size
    stored = completed_once(stack, api, agent, rid(reply))
    assert stored["resp_body"] == fill * min(size, CAPTURE_LIMIT)
    assert stored["resp_truncated"] is (size > CAPTURE_LIMIT)


def test_hop_by_hop_response_headers_are_dropped(stack: Stack, api: Api, agent: str):
    reply = get(stack, agent, "/dropped")
    assert reply.status_code == 200 and reply.content == b"ok"
    assert reply.headers["X-Kept"] == "yes"
    assert not {"trailers", "trailer", "keep-alive"} & {name.lower() for name in reply.headers}
    assert reply.headers.get("Content-Length") in (None, "2")   # not the overridden 99
    stored = completed_once(stack, api, agent, rid(reply))
    assert [name for name, _ in stored["resp_headers"]] == ["X-Kept"]


@pytest.mark.parametrize("path", ["/bad/name", "/bad/newline", "/bad/nul", "/bad/length",
                                  "/bad/lengths", "/switch"])
def test_an_unpassable_answer_is_502_and_a_failed_attempt(stack: Stack, api: Api, agent: str,
                                                        path: str):
    failed_attempts(stack, api, agent, get(stack, agent, path))


def test_a_client_leaving_mid_stream_has_the_answer_read_and_completed(stack: Stack, api: Api,
                                                                agent: str):
    host, port = stack.url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET /agent/{agent}/drip HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = b""
        while b"data: 1\n" not in head:
            head += sock.recv(4096)
    request_id = next(line.split(b": ", 1)[1].decode() for line in head.split(b"\r\n")
                      if line.lower().startswith(b"x-agentainer-request-id"))
    # NOTE: the proxy reads the rest (400 events, 20 s) and records the answer whole
    stored = wait_for_status(api, agent, request_id, "completed", timeout=40)
    assert stored["attempts"] == 1 and deliveries(stack, agent, request_id) == 1
    assert stored["resp_truncated"] is False and "client disconnected" in stored["note"]
    assert stored["resp_body"] == "".join(f"data: {n}\n\n" for n in range(400))
