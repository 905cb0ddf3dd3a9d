#!/usr/bin/env python3
"""The server's WSGI app alone: CPU per proxied request, without waitress.

``.venv/bin/python bench/inprocess.py AGENT [--requests N] [--threads T] [--profile]``

Builds the app as ``agentainer-server`` does (the checkout's settings: the stack ``make run``
started, its Redis and Docker), then calls it for ``GET /agent/AGENT/`` from ``T`` threads
and prints the process's CPU time per request (all threads: the completions writer
included). ``--profile`` runs one thread under cProfile with process time and prints the
functions that took it. The README's "In-process" figures come from here: it tells the
app's own work from waitress's and the machine's, and it is steadier than req/s.
"""

import argparse
import cProfile
import io
import pstats
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agentainer import config, tokens  # noqa: E402
from agentainer.api.app import ProxyCap, create_app  # noqa: E402
from agentainer.api.hosts import HostPolicy  # noqa: E402
from agentainer.api.listeners import HostRouting  # noqa: E402
from agentainer.wiring import build  # noqa: E402

WARM_UP = 200


def environ(agent: str) -> dict:
    return {"REQUEST_METHOD": "GET", "PATH_INFO": f"/agent/{agent}/",
            "REQUEST_URI": f"/agent/{agent}/", "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8081", "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1:8081", "HTTP_USER_AGENT": "bench", "REMOTE_ADDR": "127.0.0.1",
            "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
            "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
            "wsgi.version": (1, 0), "wsgi.input_terminated": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("agent", help="a running agent's name (persist on or off)")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    settings = config.load(None)
    components = build(settings, kind="server")
    app = HostRouting(ProxyCap(create_app(settings, components, admin_token=tokens.load_or_create(
        settings.token, settings.token_file)), settings.threads - settings.api_threads),
        HostPolicy.from_settings(settings.host, settings.allowed_hosts))
    components.heartbeat.start(now=True)

    def one() -> None:
        statuses: list[str] = []
        body = app(environ(args.agent), lambda status, headers, exc=None: statuses.append(status))
        for _ in body:
            pass
        getattr(body, "close", lambda: None)()
        if not statuses[0].startswith("200"):
            raise SystemExit(f"the agent answered {statuses[0]}")

    def loop(count: int) -> None:
        for _ in range(count):
            one()

    try:
        loop(WARM_UP)
        threads = 1 if args.profile else args.threads
        each = args.requests // threads
        profile = cProfile.Profile(time.process_time) if args.profile else None
        started, cpu = time.perf_counter(), time.process_time()
        if profile is not None:
            profile.runcall(loop, each)
        else:
            workers = [threading.Thread(target=loop, args=(each,)) for _ in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        components.completions.stop()
        done = each * threads
        print(f"{done} requests, {threads} thread(s): {cpu / done * 1e6:.0f} µs of CPU and "
              f"{wall / done * 1e6:.0f} µs of wall time per request")
        if profile is not None:
            pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
    finally:
        components.heartbeat.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
