"""Echo agent: a stdlib-only HTTP/1.1 server that reflects every request.

Routes
  GET /health      -> {"status": "ok", "agent_id": $AGENT_ID}
  anything else    -> JSON echo of method, path, query, headers and body

Per-request knobs (request headers)
  X-Echo-Delay: <seconds>   sleep before answering
  X-Echo-Status: <code>     answer with this status code (200-599)
  X-Echo-Crash: 1           exit the whole process with code 3, no answer
                            (after any X-Echo-Delay)

Environment knobs
  PORT                      listen port (default 8000)
  ECHO_EXIT_ON_START=<code> exit at once with <code> (crash-loop tests)
  ECHO_STARTUP_DELAY=<s>    sleep before listening
  ECHO_TICK=<s>             print "tick N" to stdout every <s> seconds
"""

import base64
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NO_BODY_STATUSES = {204, 304}


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


class EchoHandler(BaseHTTPRequestHandler):
    """Answers every method; `do_<METHOD>` lookups all resolve to `dispatch`."""

    protocol_version = "HTTP/1.1"
    server_version = "echo-agent/1.0"

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self.dispatch
        raise AttributeError(name)

    def dispatch(self):
        """Apply the X-Echo-* knobs, then answer /health or echo the request."""
        try:
            body = read_body(self)
        except ValueError:
            self.close_connection = True
            return self.reply(400, {"error": "malformed request body"})
        try:
            delay = float(self.headers.get("X-Echo-Delay", 0))
            status = int(self.headers.get("X-Echo-Status", 200))
            if not 0 <= delay < float("inf") or not 200 <= status <= 599:
                raise ValueError
        except ValueError:
            return self.reply(400, {"error": "bad X-Echo-Delay or X-Echo-Status"})
        time.sleep(delay)
        if self.headers.get("X-Echo-Crash", "").strip() == "1":
            log(f"{self.command} {self.path} CRASH")
            os._exit(3)

        path, _, query = self.path.partition("?")
        if self.command == "GET" and path == "/health":
            return self.reply(status, {"status": "ok", "agent_id": os.environ.get("AGENT_ID")})
        echo = {
            "method": self.command,
            "path": path,
            "query": query,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": None,
            "agent_id": os.environ.get("AGENT_ID"),
            "agent_name": os.environ.get("AGENT_NAME"),
        }
        try:
            echo["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            echo["body"] = base64.b64encode(body).decode("ascii")
            echo["body_base64"] = True
        self.reply(status, echo)

    def reply(self, status, obj):
        """Send `obj` as JSON with an exact Content-Length (no body for HEAD/204/304)."""
        data = json.dumps(obj).encode("utf-8") + b"\n"
        self.send_response(status)
        if status not in NO_BODY_STATUSES:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and status not in NO_BODY_STATUSES:
            self.wfile.write(data)

    def log_request(self, code="-", size="-"):
        log(f"{self.command or '-'} {getattr(self, 'path', '-')} {int(code)}")

    def log_message(self, format, *args):
        """Silence http.server's default stderr logging."""


def tick(interval):
    """Print `tick N` every `interval` seconds, forever."""
    n = 0
    while True:
        time.sleep(interval)
        n += 1
        log(f"tick {n}")


class BurstServer(ThreadingHTTPServer):
    """A threaded server whose listen backlog absorbs a burst of new connections."""

    request_queue_size = 128


def main():
    """Apply the environment knobs and serve until SIGTERM/SIGINT."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    if os.environ.get("ECHO_EXIT_ON_START"):
        code = int(os.environ["ECHO_EXIT_ON_START"])
        log(f"exiting with code {code} (ECHO_EXIT_ON_START)")
        sys.exit(code)
    time.sleep(float(os.environ.get("ECHO_STARTUP_DELAY") or 0))
    if os.environ.get("ECHO_TICK"):
        threading.Thread(target=tick, args=(float(os.environ["ECHO_TICK"]),), daemon=True).start()

    port = int(os.environ.get("PORT") or 8000)
    server = BurstServer(("0.0.0.0", port), EchoHandler)
    server.daemon_threads = True
    log(f"listening on 0.0.0.0:{port}")
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
