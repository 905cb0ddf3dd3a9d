"""Resumable responses: GET /agents/{id}/requests/{rid}/response, live and afterwards.

The stream agent runs the worktree's examples/stream-agent/app.py (bind-mounted over the
image's /app), which gives events SSE ids when asked (``event_ids``).
"""

import json
import re
import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.journal_helpers import started, wait_for_status
from tests.stack import STREAM_IMAGE, Api, Stack, run_cli

APP = Path(__file__).resolve().parents[2] / "examples" / "stream-agent" / "app.py"
CAPTURE_LIMIT = 64 * 1024  # AGENTAINER_CAPTURE_LIMIT
TOKEN = "X-Agentainer-Resume-Token"
COMPLETIONS = "/v1/chat/completions"


@pytest.fixture(scope="module")
def agent(stack: Stack) -> Iterator[str]:
    """The stream agent, deployed once for this module and removed after it."""
    api = Api(stack.url, stack.token)
    name = f"{stack.prefix}-sse-{secrets.token_hex(2)}"
    app_dir = stack.volume_root / name
    app_dir.mkdir()
    (app_dir / "app.py").write_text(APP.read_text())
    started(api, name, image=STREAM_IMAGE,
            volumes=[{"host_path": str(app_dir), "container_path": "/app", "read_only": True}])
    yield name
    api.delete(f"/agents/{name}")


def chat(**fields) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": "hi"}], **fields}).encode()


def open_stream(stack: Stack, agent: str, body: bytes) -> tuple[socket.socket, bytes]:
    """POST a chat completion on a raw connection; return it and the answer's head."""
    host, port = stack.url.rsplit("/", 1)[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(f"POST /agent/{agent}{COMPLETIONS} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                 .encode() + body)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    return sock, data


def header(head: bytes, name: str) -> str:
    return next(line.split(b": ", 1)[1].decode() for line in head.split(b"\r\n")
                if line.lower().startswith(name.lower().encode() + b":"))


def tokens(body: bytes) -> list[str]:
    """The content tokens of a chat completion event stream, in order."""
    return [token.decode().strip() for token in re.findall(rb'"content":"(tok[0-9]+ ?)"', body)]


def response(stack: Stack, agent: str, rid: str, **kwargs) -> requests.Response:
    kwargs.setdefault("timeout", 60)
    return requests.get(f"{stack.url}/agents/{agent}/requests/{rid}/response", **kwargs)


def test_a_cut_event_stream_resumes_after_its_last_event(stack: Stack, api: Api, agent: str):
    sock, data = open_stream(stack, agent, chat(stream=True, tokens=10, token_delay=0.3,
                                                event_ids=True))
    with sock:
        while len(tokens(data)) < 3:
            data += sock.recv(4096)
    got = tokens(data)
    assert got == ["tok0", "tok1", "tok2"], data
    last_id = re.findall(rb"id: ([0-9]+)\n", data)[-1].decode()
    rid, token = header(data, "X-Agentainer-Request-Id"), header(data, TOKEN)
    # NOTE: no admin token: the resume token alone grants the caller its own response
    resumed = response(stack, agent, rid, headers={TOKEN: token, "Last-Event-ID": last_id})
    assert resumed.status_code == 200, resumed.text
    assert resumed.headers["Content-Type"].startswith("text/event-stream")
    rest = tokens(resumed.content)
    assert rest == [f"tok{n}" for n in range(3, 10)]
    assert resumed.content.rstrip().endswith(b"data: [DONE]")
    assert len(set(got + rest)) == 10
    stored = wait_for_status(api, agent, rid, "completed", timeout=10)
    assert stored["resp_truncated"] is False and "client disconnected" in stored["note"]
    assert tokens(stored["resp_body"].encode()) == [f"tok{n}" for n in range(10)]


def test_a_response_is_followed_live_while_in_flight(stack: Stack, api: Api, agent: str):
    sock, head = open_stream(stack, agent, chat(stream=True, tokens=8, token_delay=0.25))
    rid = header(head, "X-Agentainer-Request-Id")
    followed: dict = {}

    def follow(headers: dict) -> None:
        reply = api.get(f"/agents/{agent}/requests/{rid}/response", stream=True,
                        headers=headers)
        followed[reply.headers["X-Agentainer-Offset"]] = (
            reply, b"".join(reply.iter_content(chunk_size=None)))

    followers = [threading.Thread(target=follow, args=(headers,))
                 for headers in ({}, {"Range": "bytes=10-"})]
    for thread in followers:
        thread.start()
    with sock:
        sock.settimeout(30)
        while b"0\r\n\r\n" not in head:  # NOTE: the caller reads its own stream to the end
            head += sock.recv(4096)
    for thread in followers:
        thread.join(timeout=30)
    stored = wait_for_status(api, agent, rid, "completed", timeout=10)
    whole = stored["resp_body"].encode()
    for offset, (reply, body) in followed.items():
        # NOTE: live, the length is unknown: no 206 nor Content-Range, the agent's status
        assert reply.status_code == 200 and reply.headers["X-Agentainer-Response-Live"] == "true"
        assert "Content-Range" not in reply.headers and body == whole[int(offset):]
    assert sorted(followed) == ["0", "10"]
    assert tokens(followed["0"][1]) == [f"tok{n}" for n in range(8)]


def test_a_range_resumes_a_completed_body(stack: Stack, api: Api, agent: str):
    answer = requests.post(f"{stack.url}/agent/{agent}{COMPLETIONS}", data=chat(tokens=5),
                           headers={"Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == 200
    rid, token = answer.headers["X-Agentainer-Request-Id"], answer.headers[TOKEN]
    wait_for_status(api, agent, rid, "completed", timeout=10)
    whole = response(stack, agent, rid, params={"token": token})
    assert whole.status_code == 200 and whole.content == answer.content
    assert whole.headers["X-Agentainer-Response-Live"] == "false"
    # APPSEC: the agent's body on the API's origin is never sniffed nor run as a page of it
    assert whole.headers["X-Content-Type-Options"] == "nosniff"
    assert whole.headers["Content-Security-Policy"] == "sandbox"
    ranged = response(stack, agent, rid, headers={TOKEN: token, "Range": "bytes=10-"})
    size = len(answer.content)
    assert ranged.status_code == 206 and ranged.content == answer.content[10:]
    assert ranged.headers["Content-Range"] == f"bytes 10-{size - 1}/{size}"
    past = response(stack, agent, rid, headers={TOKEN: token, "Range": f"bytes={size}-"})
    assert past.status_code == 416 and past.json()["error"] == "range_not_satisfiable"
    # NOTE: RFC 9110 §14.2: a range the server does not support is ignored, as is a Range
    # beside a Last-Event-ID
    odd = response(stack, agent, rid, headers={TOKEN: token, "Range": "bytes=0-5"})
    assert odd.status_code == 200 and odd.content == answer.content
    not_sse = response(stack, agent, rid, headers={TOKEN: token, "Last-Event-ID": "1"})
    assert not_sse.status_code == 400 and not_sse.json()["error"] == "not_event_stream"


def test_a_resume_token_reads_its_own_response_only(stack: Stack, api: Api, agent: str):
    first, second = (requests.post(f"{stack.url}/agent/{agent}{COMPLETIONS}",
                                   data=chat(tokens=2), timeout=30) for _ in range(2))
    rid = first.headers["X-Agentainer-Request-Id"]
    other = second.headers["X-Agentainer-Request-Id"]
    wait_for_status(api, agent, other, "completed", timeout=10)
    refused = response(stack, agent, other, headers={TOKEN: first.headers[TOKEN]})
    assert refused.status_code == 403 and refused.json()["error"] == "resume_token_mismatch"
    assert response(stack, agent, other).status_code == 401
    # NOTE: the resume token grants nothing else
    assert requests.get(f"{stack.url}/agents/{agent}/requests/{rid}",
                        headers={TOKEN: first.headers[TOKEN]}, timeout=10).status_code == 401
    admin = api.get(f"/agents/{agent}/requests/{other}/response")
    assert admin.status_code == 200 and admin.content == second.content
    event = api.get(f"/agents/{agent}/requests/{other}/response",
                    headers={"Last-Event-ID": "0"})
    assert event.status_code == 400 and event.json()["error"] == "not_event_stream"


def test_a_response_over_capture_limit_says_so(stack: Stack, api: Api, agent: str):
    answer = requests.post(f"{stack.url}/agent/{agent}{COMPLETIONS}",
                           data=chat(stream=True, tokens=1500, token_delay=0,
                                     event_ids=True), timeout=60)
    assert answer.status_code == 200 and len(answer.content) > CAPTURE_LIMIT
    rid, token = answer.headers["X-Agentainer-Request-Id"], answer.headers[TOKEN]
    stored = wait_for_status(api, agent, rid, "completed", timeout=10)
    assert stored["resp_truncated"] is True
    whole = response(stack, agent, rid, headers={TOKEN: token})
    assert whole.headers["X-Agentainer-Response-Truncated"] == "true"
    assert whole.content == answer.content[:CAPTURE_LIMIT]
    ranged = response(stack, agent, rid, headers={TOKEN: token, "Range": "bytes=100-"})
    assert ranged.status_code == 206
    assert ranged.headers["Content-Range"] == f"bytes 100-{CAPTURE_LIMIT - 1}/*"
    for position in ({"Range": f"bytes={CAPTURE_LIMIT}-"}, {"Last-Event-ID": "1400"}):
        past = response(stack, agent, rid, headers={TOKEN: token, **position})
        assert past.status_code == 416 and past.json()["error"] == "beyond_capture", position
    unknown = response(stack, agent, rid, headers={TOKEN: token, "Last-Event-ID": "x"})
    assert unknown.status_code == 416 and unknown.json()["error"] == "beyond_capture"
    kept = response(stack, agent, rid, headers={TOKEN: token, "Last-Event-ID": "3"})
    assert kept.status_code == 200 and tokens(kept.content)[:2] == ["tok4", "tok5"]


def test_an_unknown_event_id_is_refused(stack: Stack, api: Api, agent: str):
    answer = requests.post(f"{stack.url}/agent/{agent}{COMPLETIONS}",
                           data=chat(stream=True, tokens=3, event_ids=True), timeout=30)
    rid, token = answer.headers["X-Agentainer-Request-Id"], answer.headers[TOKEN]
    wait_for_status(api, agent, rid, "completed", timeout=10)
    unknown = response(stack, agent, rid, headers={TOKEN: token, "Last-Event-ID": "99"})
    assert unknown.status_code == 404 and unknown.json()["error"] == "event_not_found"
    last = response(stack, agent, rid, headers={TOKEN: token, "Last-Event-ID": "2"})
    assert last.status_code == 200 and tokens(last.content) == []
    assert last.content.rstrip().endswith(b"data: [DONE]")


def test_cli_follows_a_response(stack: Stack, api: Api, agent: str):
    sock, head = open_stream(stack, agent, chat(stream=True, tokens=6, token_delay=0.3))
    rid = header(head, "X-Agentainer-Request-Id")
    sock.close()  # NOTE: the caller goes; the proxy reads on, and the CLI follows
    shown = run_cli(stack, "requests", "show", agent, rid, "--follow", timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert tokens(shown.stdout.encode()) == [f"tok{n}" for n in range(6)]
    stored = wait_for_status(api, agent, rid, "completed", timeout=10)
    assert shown.stdout == stored["resp_body"]


def test_a_queued_requests_response_is_followed_as_replay_delivers_it(stack: Stack, api: Api,
                                                                      agent: str):
    assert api.post(f"/agents/{agent}/stop").status_code == 200
    try:
        queued = requests.post(f"{stack.url}/agent/{agent}{COMPLETIONS}",
                               data=chat(stream=True, tokens=6, token_delay=0.2), timeout=30)
        assert queued.status_code == 202, queued.text
        rid, token = queued.headers["X-Agentainer-Request-Id"], queued.headers[TOKEN]
        pending = response(stack, agent, rid, headers={TOKEN: token}, params={"wait": "200ms"})
        assert pending.status_code == 409 and pending.json()["error"] == "response_pending"
        assert pending.headers["Retry-After"]
        followed: dict = {}
        thread = threading.Thread(target=lambda: followed.update(reply=response(
            stack, agent, rid, headers={TOKEN: token}, params={"wait": "60s"})))
        thread.start()
    finally:
        assert api.post(f"/agents/{agent}/start").status_code == 200
    thread.join(timeout=90)
    reply = followed["reply"]
    assert reply.status_code == 200, reply.text
    assert reply.headers["X-Agentainer-Response-Live"] == "true"  # NOTE: replay publishes it
    assert tokens(reply.content) == [f"tok{n}" for n in range(6)]
    stored = wait_for_status(api, agent, rid, "completed", timeout=10)
    assert reply.content == stored["resp_body"].encode() and stored["attempts"] == 1


def test_a_resend_of_a_key_in_flight_gets_the_way_to_follow_it(stack: Stack, api: Api,
                                                               agent: str):
    key = f"resume-{secrets.token_hex(4)}"
    body = chat(stream=True, tokens=6, token_delay=0.2)
    host, port = stack.url.rsplit("/", 1)[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    with sock:
        sock.sendall(f"POST /agent/{agent}{COMPLETIONS} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Idempotency-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n"
                     .encode() + body)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
    rid = header(head, "X-Agentainer-Request-Id")
    again = requests.post(f"{stack.url}/agent/{agent}{COMPLETIONS}", data=body,
                          headers={"Idempotency-Key": key}, timeout=30)
    assert again.status_code == 409 and again.json()["error"] == "idempotency_in_progress"
    assert again.headers["X-Agentainer-Request-Id"] == rid
    assert again.headers[TOKEN] == header(head, TOKEN)
    followed = response(stack, agent, rid, headers={TOKEN: again.headers[TOKEN]})
    assert tokens(followed.content) == [f"tok{n}" for n in range(6)]
