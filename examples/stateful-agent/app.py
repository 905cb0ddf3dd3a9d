"""Stateful agent: a stdlib-only HTTP/1.1 server that persists its state.

State lives in $STATE_DIR/state.json (default /app/data/state.json), is loaded
at start and saved atomically (temp file + rename) after every change, so it
survives restarts when the directory is a volume.

Routes
  GET  /health   -> {"status": "ok", "agent_id": $AGENT_ID}
  GET  /state    -> the state
  POST /process  -> count the JSON body, record it in history; returns the state
  POST /config   -> merge a JSON object into state["config"]; returns the state
"""

import copy
import json
import os
import signal
import sys
import tempfile
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HISTORY_LIMIT = 100
DEFAULT_STATE = {"processed_count": 0, "last_run": None, "config": {}, "history": []}


def log(line):
    """Write one whole line to stdout and flush (a single write, so threads don't interleave)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class StatefulAgent:
    """Thread-safe state with JSON persistence."""

    def __init__(self, state_dir):
        self.path = os.path.join(state_dir, "state.json")
        self.lock = threading.Lock()
        self.state = copy.deepcopy(DEFAULT_STATE)
        try:
            with open(self.path, encoding="utf-8") as f:
                saved = json.load(f)
            if not isinstance(saved, dict):
                raise ValueError("not a JSON object")
            self.state.update(saved)
            log(f"loaded state from {self.path}")
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            log(f"ignoring unreadable state {self.path}: {e}")

    def save(self):
        """Write the state to a temp file in the same directory, then rename it over."""
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".state-", suffix=".tmp")
        os.fchmod(fd, 0o644)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.state, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise

    def snapshot(self):
        with self.lock:
            return copy.deepcopy(self.state)

    def process(self, data):
        """Count one unit of work and remember its input."""
        with self.lock:
            now = datetime.now(timezone.utc).isoformat()
            self.state["processed_count"] += 1
            self.state["last_run"] = now
            self.state["history"] = (self.state["history"] + [{"timestamp": now, "input": data}])[-HISTORY_LIMIT:]
            self.save()
            return copy.deepcopy(self.state)

    def configure(self, updates):
        """Shallow-merge `updates` into the config."""
        with self.lock:
            self.state["config"].update(updates)
            self.save()
            return copy.deepcopy(self.state)


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


class StatefulHandler(BaseHTTPRequestHandler):
    """Routes requests to the server's StatefulAgent."""

    protocol_version = "HTTP/1.1"
    server_version = "stateful-agent/1.0"

    def do_GET(self):
        path = self.path.partition("?")[0]
        if path == "/health":
            self.reply(200, {"status": "ok", "agent_id": os.environ.get("AGENT_ID")})
        elif path == "/state":
            self.reply(200, self.server.agent.snapshot())
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        path = self.path.partition("?")[0]
        try:
            raw = read_body(self)
            data = json.loads(raw) if raw.strip() else None
        except ValueError:
            return self.reply(400, {"error": "body must be JSON"})
        if path == "/process":
            self.reply(200, self.server.agent.process(data))
        elif path == "/config":
            if not isinstance(data, dict):
                return self.reply(400, {"error": "config must be a JSON object"})
            self.reply(200, self.server.agent.configure(data))
        else:
            self.reply(404, {"error": "not found"})

    def reply(self, status, obj):
        """Send `obj` as JSON with an exact Content-Length."""
        data = json.dumps(obj).encode("utf-8") + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
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
    """Load the state and serve until SIGTERM/SIGINT."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    port = int(os.environ.get("PORT") or 8000)
    server = BurstServer(("0.0.0.0", port), StatefulHandler)
    server.daemon_threads = True
    server.agent = StatefulAgent(os.environ.get("STATE_DIR") or "/app/data")
    log(f"listening on 0.0.0.0:{port}")
    try:
        server.serve_forever()
    finally:
        server.server_close()
        server.agent.lock.acquire()  # let an in-flight save finish; block further ones


if __name__ == "__main__":
    main()
