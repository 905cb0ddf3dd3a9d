"""Stream agent: a stdlib-only HTTP/1.1 stand-in for an OpenAI-compatible LLM.

The reply is deterministic: "You said: <last user message>", split into tokens
(each word with its trailing whitespace). With "stream": true the tokens are
sent one Server-Sent Event each, in chunked transfer encoding, flushed as they
are produced; the first token leaves at once, then one every token_delay seconds.

Routes
  GET  /health               -> {"status": "ok", "agent_id": $AGENT_ID}
  POST /v1/chat/completions  -> chat.completion, or a chat.completion.chunk
                                event stream ending in "data: [DONE]"

Request body fields besides the OpenAI ones (model, messages, stream,
max_tokens / max_completion_tokens, stream_options.include_usage)
  token_delay: <seconds>   delay between tokens (default $STREAM_TOKEN_DELAY)
  tokens: <n>              reply with exactly n tokens "tok0 tok1 ..." instead
                           (default $STREAM_TOKENS); max_tokens still caps it
  event_ids: true          give every event an SSE id ("id: 0", "id: 1", ...), so a
                           client can resume after one with Last-Event-ID

Environment knobs
  PORT                     listen port (default 8000)
  STREAM_TOKEN_DELAY=<s>   default delay between tokens (default 0.05)
  STREAM_TOKENS=<n>        default for "tokens" (unset: echo the user)
  DELIVERY_LOG=<path>      append one JSON line per request received (all but
                           GET /health), written before it is answered: time,
                           method, path, request_id (X-Agentainer-Request-Id),
                           replay (X-Agentainer-Replay), idempotency_key and seq
                           (the client's X-Client-Seq header)
"""

import itertools
import json
import math
import os
import re
import signal
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_MODEL = "stream-agent"
TOKEN_RE = re.compile(r"\s*\S+\s*")


def log(line):
    """Write one whole line to stdout and flush (a single write, so threads don't interleave)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def read_body(handler):
    """Return the request body, honouring Content-Length or chunked encoding."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # skip trailers
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()  # CRLF after each chunk
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length > 0 else b""


class DeliveryLog:
    """Appends one JSON line per delivery to a file, each in a single O_APPEND write.

    One write(2) per line: threads never interleave, and a line is in the kernel before
    the request is answered, so it survives the process being killed.
    """

    def __init__(self, path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(self, handler):
        headers = handler.headers
        line = {"time": time.time(), "method": handler.command,
                "path": handler.path.partition("?")[0],
                "request_id": headers.get("X-Agentainer-Request-Id"),
                "replay": headers.get("X-Agentainer-Replay", "").lower() == "true",
                "idempotency_key": headers.get("Idempotency-Key"),
                "seq": headers.get("X-Client-Seq")}
        os.write(self._fd, json.dumps(line).encode("utf-8") + b"\n")


class BadRequest(Exception):
    """A request the client must fix; the message goes into the 400 answer."""


def parse_delay(value, what):
    """A finite, non-negative number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadRequest(f"{what} must be a number of seconds")
    try:
        delay = float(value)
    except ValueError:
        raise BadRequest(f"{what} must be a number of seconds") from None
    if not 0 <= delay < math.inf:
        raise BadRequest(f"{what} must be finite and >= 0")
    return delay


def parse_count(value, what, minimum):
    """An integer >= minimum (JSON true/false and 2.5 are refused)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadRequest(f"{what} must be an integer >= {minimum}")
    return value


def content_text(content):
    """The text of a message's content: a string, or a list of {"type": "text"} parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise BadRequest("message content must be a string or a list of content parts")


def tokenize(text):
    """Split into words, each with its trailing whitespace (leading whitespace goes with the first)."""
    return TOKEN_RE.findall(text)


def plan_reply(req, defaults):
    """Validate the request; return (model, tokens, finish_reason, prompt_tokens, delay)."""
    if not isinstance(req, dict):
        raise BadRequest("request body must be a JSON object")
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array")
    texts, last_user = [], ""
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest("each message must be an object with a string 'role'")
        text = content_text(m.get("content"))
        texts.append(text)
        if m["role"] == "user":
            last_user = text
    model = req.get("model") or DEFAULT_MODEL
    if not isinstance(model, str):
        raise BadRequest("'model' must be a string")
    if not isinstance(req.get("stream", False), bool):
        raise BadRequest("'stream' must be a boolean")

    delay = defaults["delay"]
    if req.get("token_delay") is not None:
        delay = parse_delay(req["token_delay"], "'token_delay'")
    count = defaults["tokens"]
    if req.get("tokens") is not None:
        count = parse_count(req["tokens"], "'tokens'", 0)
    if count is None:
        tokens = tokenize("You said: " + last_user)
    else:
        tokens = tokenize(" ".join(f"tok{i}" for i in range(count)))
    finish_reason = "stop"
    limit = req.get("max_completion_tokens", req.get("max_tokens"))
    if limit is not None:
        limit = parse_count(limit, "'max_tokens'", 1)
        if len(tokens) > limit:
            tokens, finish_reason = tokens[:limit], "length"
    prompt_tokens = sum(len(tokenize(t)) for t in texts)
    return model, tokens, finish_reason, prompt_tokens, delay


def paced(tokens, delay):
    """Yield the tokens, the first at once and then one every `delay` seconds (no drift)."""
    start = time.monotonic()
    for i, token in enumerate(tokens):
        wait = start + i * delay - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        yield token


def error_body(message, kind="invalid_request_error"):
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


class StreamHandler(BaseHTTPRequestHandler):
    """Serves /health and an OpenAI-style /v1/chat/completions."""

    protocol_version = "HTTP/1.1"
    server_version = "stream-agent/1.0"
    disable_nagle_algorithm = True  # TCP_NODELAY: every token goes out in its own segment at once

    def do_GET(self):
        path = self.path.partition("?")[0]
        if path == "/health":
            return self.reply(200, {"status": "ok", "agent_id": os.environ.get("AGENT_ID")})
        self.record_delivery()
        if path == "/v1/chat/completions":
            self.reply(405, error_body("use POST"), [("Allow", "POST")])
        else:
            self.reply(404, error_body(f"no route for GET {path}"))

    def do_POST(self):
        path = self.path.partition("?")[0]
        try:
            raw = read_body(self)
        except ValueError:
            self.close_connection = True
            return self.reply(400, error_body("malformed request body"))
        self.record_delivery()
        if path != "/v1/chat/completions":
            return self.reply(404, error_body(f"no route for POST {path}"))
        try:
            try:
                req = json.loads(raw)
            except ValueError:
                raise BadRequest("request body must be JSON") from None
            model, tokens, finish_reason, prompt_tokens, delay = plan_reply(req, self.server.defaults)
        except BadRequest as e:
            return self.reply(400, error_body(str(e)))

        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens),
                 "total_tokens": prompt_tokens + len(tokens)}
        if not req.get("stream"):
            text = "".join(paced(tokens, delay))  # take as long as the stream would
            return self.reply(200, {
                "id": completion_id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": None, "finish_reason": finish_reason}],
                "usage": usage,
            })

        include_usage = isinstance(req.get("stream_options"), dict) and req["stream_options"].get("include_usage") is True
        ids = itertools.count() if req.get("event_ids") is True else None

        def chunk(delta, reason, **extra):
            return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}],
                    **extra}

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.chunked = self.request_version != "HTTP/1.0"
        if self.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")  # an HTTP/1.0 client reads to EOF
            self.close_connection = True
        self.end_headers()
        try:
            for i, token in enumerate(paced(tokens, delay)):
                delta = {"role": "assistant", "content": token} if i == 0 else {"content": token}
                self.send_event(chunk(delta, None), ids)
            if not tokens:
                self.send_event(chunk({"role": "assistant", "content": ""}, None), ids)
            self.send_event(chunk({}, finish_reason), ids)
            if include_usage:
                self.send_event(dict(chunk({}, None), choices=[], usage=usage), ids)
            self.send_event("[DONE]", ids)
            if self.chunked:
                self.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-stream

    def record_delivery(self):
        """Note this request in $DELIVERY_LOG, when set."""
        if self.server.deliveries is not None:
            self.server.deliveries.record(self)

    def send_event(self, obj, ids=None):
        """One SSE event (`data: ...` + blank line, after `id: N` when `ids` counts them),
        as one chunk, sent at once."""
        data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
        event = b"data: " + data.encode("utf-8") + b"\n\n"
        if ids is not None:
            event = b"id: %d\n" % next(ids) + event
        self.write(b"%x\r\n%s\r\n" % (len(event), event) if self.chunked else event)

    def write(self, data):
        self.wfile.write(data)
        self.wfile.flush()

    def reply(self, status, obj, headers=()):
        """Send `obj` as JSON with an exact Content-Length."""
        data = json.dumps(obj).encode("utf-8") + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code="-", size="-"):
        log(f"{self.command or '-'} {getattr(self, 'path', '-')} {int(code)}")

    def log_message(self, format, *args):
        """Silence http.server's default stderr logging."""


class BurstServer(ThreadingHTTPServer):
    """A threaded server whose listen backlog absorbs a burst of new connections."""

    request_queue_size = 128


def main():
    """Read the environment knobs and serve until SIGTERM/SIGINT."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    try:
        defaults = {"delay": parse_delay(os.environ.get("STREAM_TOKEN_DELAY") or "0.05", "STREAM_TOKEN_DELAY"),
                    "tokens": None}
        if os.environ.get("STREAM_TOKENS"):
            defaults["tokens"] = parse_count(os.environ["STREAM_TOKENS"], "STREAM_TOKENS", 0)
    except BadRequest as e:
        log(f"bad environment: {e}")
        sys.exit(2)

    port = int(os.environ.get("PORT") or 8000)
    server = BurstServer(("0.0.0.0", port), StreamHandler)
    server.daemon_threads = True
    server.defaults = defaults
    delivery_log = os.environ.get("DELIVERY_LOG")
    server.deliveries = DeliveryLog(delivery_log) if delivery_log else None
    log(f"listening on 0.0.0.0:{port}")
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
