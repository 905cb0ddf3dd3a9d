#!/usr/bin/env python3
"""Agentainer benchmark: ``make bench`` (or ``.venv/bin/python bench/run.py``).

Starts an isolated stack of its own (bench/stack.py: a private redis-server with AOF, two
``agentainer-server`` processes sharing one port, two ``agentainer-worker`` processes and,
as supervisord.conf has it, ``agentainer-monitor``; networks named with a random prefix),
deploys agents through the REST API, measures

  a. an A/B of this tree against the commit before issue 12's work (bench/ab.py): a second
     stack from that commit, wrk c=16 against each in turn, both stacks still fresh;
  b. latency and throughput with wrk: straight to a container, through nginx as a reverse
     proxy to the same container (bench/nginx.py), and through Agentainer's proxy with the
     journal off (``"persist": false``) and on; over the c=16 runs, the CPU each request
     cost the proxy's processes and Redis, and the Redis commands it took (bench/cost.py);
  c. SSE time to first token and the gap between tokens, direct vs proxied;
  d. /health latency and the servers' memory while 1,000 SSE streams are held open;
  e. the replay drain rate of the queued requests of one agent, and of eight at once;
  f. wake from idle: a request to an echo agent the idle rule paused, then stopped, until
     its first byte and its answer (bench/wake.py);

prints a markdown table and writes it into README.md between ``<!-- bench:start -->``
and ``<!-- bench:end -->``. Everything it created is removed at the end, whatever happens.

Options: ``--no-readme`` (print only), ``--json FILE`` (raw figures), ``--quick`` (short
runs, fewer streams and requests, one A/B round, for trying the script out; never written
into README.md), ``--skip-ab``, ``--ab-rounds N``, ``--no-monitor``, ``--keep-logs``,
``--streams N``, ``--stream-agents N``, ``--replay N``, ``--replay-each N``. Needs wrk and
nginx (``make bench`` installs both), redis-server, git, Docker and the example images
(``make images``).
"""

import argparse
import asyncio
import concurrent.futures
import datetime
import http.client
import json
import os
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import ab, cost, wake  # noqa: E402
from bench.chaos.tally import percentile  # noqa: E402
from bench.nginx import Nginx, find_nginx  # noqa: E402
from bench.readme import README, git_commit, machine, write_block  # noqa: E402
from bench.stack import Api, Stack, container_ip, log, wait_http  # noqa: E402

HERE = Path(__file__).resolve().parent

UPSTREAM_IMAGE = "agentainer/bench-upstream:latest"
STREAM_IMAGE = "agentainer/stream-agent:latest"
BASE_IMAGE = "agentainer/python-base:latest"

# Targets, issue 12 (persist on, this machine; see the table's last two columns).
TARGET_RPS_C16 = 1500.0            # req/s at c=16
TARGET_AB_RATIO = 2.0              # req/s at c=16 against the baseline commit's, A/B
TARGET_CPU_US = 500.0              # server CPU per proxied request (c=16)
TARGET_P50_OVERHEAD_MS = 1.0       # p50 at c=1 over direct
TARGET_TTFT_OVERHEAD_MS = 2.0      # SSE first token over direct
TARGET_STREAMS = 1000              # SSE streams held open at once
TARGET_HEALTH_P99_MS = 50.0        # GET /health p99 while they are
TARGET_REPLAY_RPS = 1500.0         # drain rate, one agent
TARGET_REPLAY_MANY_RPS = 3000.0    # drain rate, REPLAY_AGENTS agents at once

REPLAY_AGENTS = 8
OPEN_CONCURRENCY = 8    # held streams being opened at once (see _hold_streams)
HELD_TOKEN_DELAY = 0.5  # s between a held stream's tokens
IDLE_WINDOW = 2.0       # s of idle before each costed run: the background to subtract


# --------------------------------------------------------------------------- wrk


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"cannot read wrk's latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict:
    """Return p50/p99 (ms), req/s, requests, socket errors and non-2xx from wrk --latency."""
    result = {"p50_ms": None, "p99_ms": None, "rps": None, "requests": 0, "errors": 0,
              "non2xx": 0}
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        match = re.search(rf"^\s*{pct}(?:\.0+)?%\s+(\S+)", output, re.M)
        if match:
            result[key] = _ms(match.group(1))
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match:
        result["rps"] = float(match.group(1))
    match = re.search(r"(\d+) requests in", output)
    if match:
        result["requests"] = int(match.group(1))
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      output)
    if match:
        result["errors"] = sum(int(n) for n in match.groups())
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if match:
        result["non2xx"] = int(match.group(1))
    return result


def wrk(url: str, threads: int, connections: int, seconds: int) -> dict:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr or done.stdout}")
    result = parse_wrk(done.stdout)
    if result["rps"] is None or result["p50_ms"] is None:
        raise RuntimeError(f"cannot parse wrk's output:\n{done.stdout}")
    result["command"] = " ".join(command)
    return result




def measure_http(targets: dict[str, str], meters: dict[str, cost.Meter], quick: bool) -> dict:
    """wrk c=1, c=16, c=64 against each target (runs interleaved by load level).

    The c=16 run of a target with a meter is costed (bench.cost.measure): its result gets
    a ``cost`` of CPU µs (and Redis commands) per request.
    """
    c1, cn = (2, 3) if quick else (5, 10)
    results: dict = {name: {} for name in targets}
    for name, url in targets.items():
        log(f"warm-up {name}: {url}")
        wrk(url, 2, 16, 2)
    for label, threads, conns, seconds in (("c1", 1, 1, c1), ("c16", 2, 16, cn),
                                           ("c64", 2, 64, cn)):
        for name, url in targets.items():
            meter = meters.get(name) if label == "c16" else None
            if meter is None:
                result = wrk(url, threads, conns, seconds)
            else:
                result, result["cost"] = cost.measure(
                    meter, lambda: wrk(url, threads, conns, seconds), IDLE_WINDOW)
            results[name][label] = result
            log(f"{name} {label}: p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms,"
                f" {result['rps']:.0f} req/s, errors {result['errors']}, "
                f"non-2xx {result['non2xx']}" + (f"; cost {result['cost']}" if meter else ""))
            time.sleep(1)  # let the journal's fsync and the janitor settle between runs
    return results


def measure_commands(stack: Stack, targets: dict[str, str], seconds: int) -> dict:
    """The commands the clients sent Redis per request, as MONITOR shows them (c=16 runs).

    A run of its own: MONITOR costs Redis a good deal of CPU, so the costed runs of
    measure_http go without it.
    """
    watch = cost.CommandWatch("127.0.0.1", stack.redis_port)
    try:
        meter = cost.Meter(lambda: [p.pid for p in stack.servers], stack.redis_url, watch)
        results = {}
        for name, url in targets.items():
            _, results[name] = cost.measure(meter, lambda: wrk(url, 2, 16, seconds),
                                            IDLE_WINDOW)
            log(f"commands {name}: {results[name]}")
            time.sleep(1)
        return results
    finally:
        watch.close()


# --------------------------------------------------------------------------- SSE timing


def sse_body(tokens: int, delay: float) -> bytes:
    return json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}],
                       "stream": True, "token_delay": delay, "tokens": tokens}).encode()


def sse_request(host: str, port: int, path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class SSEClient:
    """A keep-alive raw-socket client that timestamps each ``data:`` event as it arrives."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.sock: socket.socket | None = None
        self.connects = 0

    def _connect(self) -> None:
        self.connects += 1
        self.sock = socket.create_connection((self.host, self.port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.sock:
            self.sock.close()
            self.sock = None

    def stream(self, path: str, body: bytes) -> list[float]:
        """Send one request; return each event's arrival time (s) after the send.

        A connection the server closed after the previous stream is reopened first, and
        that counts: a keep-alive client (an SDK's pool) pays it too.
        """
        request = sse_request(self.host, self.port, path, body)
        buf = bytearray()
        events: list[float] = []
        pos = 0
        t0 = time.perf_counter()
        if self.sock is None:
            self._connect()
        self.sock.sendall(request)
        head_end = -1
        keep_alive = True
        while True:
            chunk = self.sock.recv(65536)
            now = time.perf_counter()
            if not chunk:
                keep_alive = False
                break
            buf += chunk
            if head_end < 0:
                head_end = buf.find(b"\r\n\r\n")
                if head_end < 0:
                    continue
                head = bytes(buf[:head_end]).lower()
                if not head.startswith((b"http/1.1 200", b"http/1.0 200")):
                    raise RuntimeError(f"{path}: {bytes(buf[:300])!r}")
                if b"transfer-encoding: chunked" not in head or b"connection: close" in head:
                    keep_alive = False
                pos = head_end + 4
            while True:
                found = buf.find(b"data: ", pos)
                if found < 0:
                    break
                events.append(now - t0)
                pos = found + 6
            if keep_alive and b"data: [DONE]" in buf and buf.endswith(b"\r\n0\r\n\r\n"):
                break
        if not keep_alive:
            self.close()
        return events


def measure_sse(targets: dict[str, tuple[str, int, str]], runs: int, tokens: int,
                delay: float) -> dict:
    """Median first-token time and mean token gap over ``runs``, targets interleaved."""
    body = sse_body(tokens, delay)
    clients = {name: SSEClient(host, port) for name, (host, port, _) in targets.items()}
    samples: dict = {name: {"ttft": [], "gap": []} for name in targets}
    try:
        for run in range(runs + 2):
            for name, (_, _, path) in targets.items():
                events = clients[name].stream(path, body)
                token_events = events[:tokens]
                if len(token_events) < tokens:
                    raise RuntimeError(f"{name}: {len(events)} events for {tokens} tokens")
                if run < 2:
                    continue  # warm-up
                samples[name]["ttft"].append(token_events[0] * 1000)
                gaps = [b - a for a, b in zip(token_events, token_events[1:])]
                samples[name]["gap"].append(statistics.fmean(gaps) * 1000)
    finally:
        for client in clients.values():
            client.close()
    return {name: {"ttft_ms": statistics.median(s["ttft"]),
                   "connects": clients[name].connects, "streams": runs + 2,
                   "ttft_p90_ms": sorted(s["ttft"])[int(0.9 * (len(s["ttft"]) - 1))],
                   "gap_ms": statistics.median(s["gap"]), "runs": len(s["ttft"])}
            for name, s in samples.items()}


# --------------------------------------------------------------------------- held streams


class Refused(ConnectionError):
    """A stream answered something else than 200; says ``503 proxy_busy``."""

    def __init__(self, response: bytes) -> None:
        status = response.split(b" ", 2)[1].decode(errors="replace") if b" " in response else "?"
        code = re.search(rb'"error":\s*"([^"]+)"', response)  # api/envelope.py's failure
        super().__init__(f"{status} {code.group(1).decode() if code else ''}".rstrip())


def _reason(error: BaseException) -> str:
    """How a held stream failed, counted in the report: ``503 proxy_busy``, ``timeout``."""
    if isinstance(error, Refused):
        return str(error)
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    return type(error).__name__


async def _hold_streams(host: str, port: int, paths: list[str], count: int, tokens: int,
                        delay: float, open_timeout: float) -> None:
    """Child process: open ``count`` streams, report, hold them until stdin says stop.

    Stream ``i`` goes to ``paths[i % len(paths)]``.
    """
    requests = [sse_request(host, port, path, sse_body(tokens, delay)) for path in paths]
    state = {"opened": 0, "ended": 0, "errors": 0, "events": 0, "first_error": ""}
    reasons: Counter = Counter()
    all_open = asyncio.Event()
    stop = asyncio.Event()
    alive: set[int] = set()
    settled: list[None] = []
    # NOTE: opened a few at a time: a burst of connects overflows the stream agent's
    # listen backlog (the proxy then times out connecting)
    opening = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def first_token(index: int):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            return reader, writer, await read_first_token(reader, writer,
                                                          requests[index % len(requests)])
        except BaseException:
            writer.close()
            raise

    async def read_first_token(reader, writer, request: bytes) -> bytes:
        writer.write(request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError(f"closed before the response: {buf[:200]!r}")
            buf += chunk
        if not buf.startswith(b"HTTP/1.1 200"):
            length = re.search(rb"(?im)^content-length:\s*(\d+)", buf)
            end = buf.index(b"\r\n\r\n") + 4 + min(int(length.group(1)) if length else 0,
                                                       4096)
            while len(buf) < end:  # the error's body says why
                chunk = await reader.read(65536)
                if not chunk:
                    break
                buf += chunk
            raise Refused(buf[:end])
        while b"data: " not in buf:
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError(f"closed before the first token: {buf[:300]!r}")
            buf += chunk
        return buf

    def settle() -> None:  # a stream got its first token, or failed before it
        settled.append(None)
        if len(settled) == count:
            all_open.set()

    async def one(index: int) -> None:
        writer = None
        try:
            async with opening:
                reader, writer, buf = await asyncio.wait_for(first_token(index), 15)
            state["opened"] += 1
            state["events"] += buf.count(b"data: ")
            alive.add(index)
            settle()
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    state["ended"] += 1
                    alive.discard(index)
                    return
                state["events"] += chunk.count(b"data: ")
        except asyncio.CancelledError:
            raise
        except Exception as ex:  # noqa: BLE001 - counted and reported
            state["errors"] += 1
            reasons[_reason(ex)] += 1
            state["first_error"] = state["first_error"] or repr(ex)[:300]
            if index not in alive:
                settle()
            alive.discard(index)
        finally:
            if writer is not None:
                writer.close()

    def report(event: str, **extra) -> None:
        print(json.dumps({"event": event, **state, "reasons": dict(reasons),
                          "alive": len(alive), **extra}), flush=True)

    loop = asyncio.get_running_loop()
    started = time.monotonic()
    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    try:
        await asyncio.wait_for(all_open.wait(), open_timeout)
    except asyncio.TimeoutError:
        pass
    report("opened", seconds=round(time.monotonic() - started, 2))
    loop.add_reader(sys.stdin.fileno(), stop.set)
    await stop.wait()
    report("final")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def hold_streams_main(argv: list[str]) -> int:
    host, port, count, tokens, delay, open_timeout, deadline, *paths = argv
    signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
    signal.alarm(int(float(deadline)))  # hard bound, whatever the parent does
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a socket per stream
    asyncio.run(_hold_streams(host, int(port), paths, int(count), int(tokens), float(delay),
                              float(open_timeout)))
    return 0


def probe_health(host: str, port: int, count: int, pause: float) -> tuple[list[float], int]:
    """``GET /health`` on a fresh connection each time: latencies in ms of the 200s, and
    how many probes failed (another status, or no answer in 10 s)."""
    latencies, failed = [], 0
    for _ in range(count):
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("GET", "/health")
            reply = conn.getresponse()
            reply.read()
            if reply.status == 200:
                latencies.append((time.perf_counter() - t0) * 1000)
            else:
                failed += 1
        except OSError:
            failed += 1
        finally:
            conn.close()
        time.sleep(pause)
    return latencies, failed


def measure_held_streams(port: int, paths: list[str], count: int, probes: int, budget: float,
                         servers: list[int]) -> dict:
    """Hold ``count`` SSE streams through the proxy while probing /health.

    The servers' (``servers``: PIDs) resident memory is read before they open and once
    they are; a stream refused or broken is counted by its reason, never fatal.
    """
    baseline, _ = probe_health("127.0.0.1", port, probes, 0.05)
    rss_before = sum(cost.rss_kib(pid) for pid in servers)
    tokens = int(budget / HELD_TOKEN_DELAY)  # streams outlast the whole measurement
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--hold-streams", "127.0.0.1",
         str(port), str(count), str(tokens), str(HELD_TOKEN_DELAY), str(budget / 2),
         str(budget), *paths],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in child.stdout],
                     daemon=True).start()
    deadline = time.monotonic() + budget

    def next_report() -> dict:
        try:
            return json.loads(lines.get(timeout=max(1.0, deadline - time.monotonic())))
        except queue.Empty:
            raise RuntimeError(f"the stream holder did not report within {budget:.0f} s"
                               ) from None

    try:
        opened = next_report()
        log(f"streams: {opened['opened']}/{count} got their first token in "
            f"{opened['seconds']} s (errors {opened['errors']}: {opened['reasons']}; "
            f"first: {opened['first_error']})")
        time.sleep(1.0)
        rss_open = sum(cost.rss_kib(pid) for pid in servers)
        during, failed = probe_health("127.0.0.1", port, probes, 0.05)
        child.stdin.write("stop\n")
        child.stdin.flush()
        final = next_report()
    finally:
        if child.poll() is None:
            try:
                child.stdin.close()
            except OSError:
                pass
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=10)
    return {"requested": count, "agents": len(paths), "opened": opened["opened"],
            "open_seconds": opened["seconds"], "alive_at_end": final["alive"],
            "errors": final["errors"], "reasons": final["reasons"],
            "ended_early": final["ended"], "first_error": final["first_error"],
            "events": final["events"], "probes": probes, "health_failed": failed,
            "health_p50_ms": statistics.median(during) if during else None,
            "health_p99_ms": percentile(during, 0.99) if during else None,
            "health_max_ms": max(during) if during else None,
            "baseline_p50_ms": statistics.median(baseline),
            "baseline_max_ms": max(baseline),
            "rss_before_kib": rss_before, "rss_open_kib": rss_open,
            "rss_per_stream_kib": ((rss_open - rss_before) / opened["opened"]
                                   if opened["opened"] else None)}


# --------------------------------------------------------------------------- replay drain


def measure_replay(api: Api, agents: list[dict], each: int, timeout: float) -> dict:
    """Queue ``each`` requests to every agent (running, then paused), resume them together.

    NOTE: paused, not stopped: a resume takes milliseconds where a start takes a container
    start, which would be what the rate measured across agents. The drain rate is the
    completions' from the first to the last, by the journal's timestamps, across all the
    agents; a drain still going after ``timeout`` seconds is reported as such.
    """
    import requests

    local = threading.local()
    refusals: list[str] = []
    total = each * len(agents)

    def send(index: int) -> int:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        agent = agents[index % len(agents)]
        reply = session.post(f"{api.url}/agent/{agent['name']}/work", json={"n": index},
                             timeout=30)
        if reply.status_code != 202:
            refusals.append(reply.text[:300])
        return reply.status_code

    for agent in agents:
        api.call("POST", f"/agents/{agent['id']}/pause")
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(send, range(total)))
    queue_seconds = time.monotonic() - t0
    accepted = statuses.count(202)
    if accepted != total:
        others = {s: statuses.count(s) for s in set(statuses)}
        raise RuntimeError(f"queueing: expected {total} x 202, got {others}; first: "
                           f"{refusals[0]}")
    paths = [f"/agents/{agent['id']}/requests" for agent in agents]

    def count(path: str, status: str) -> int:
        return api.call("GET", path, params={"status": status, "limit": 1})["total"]

    queued = sum(count(path, "queued") for path in paths)
    log(f"replay: {accepted} requests queued in {queue_seconds:.2f} s for {len(agents)} "
        f"agent(s); the queues hold {queued}")

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(agents)) as pool:
        list(pool.map(lambda agent: Api(api.url, api.token).call(
            "POST", f"/agents/{agent['id']}/resume"), agents))
    running = time.monotonic()
    deadline = started + timeout
    pending = set(paths)
    while pending and time.monotonic() < deadline:
        pending -= {path for path in pending
                    if count(path, "queued") == 0 and count(path, "completed") >= each}
        time.sleep(0.05 if len(agents) == 1 else 0.2)
    finished = time.monotonic()
    stamps = []
    for path in paths:
        for offset in range(0, each, 500):
            page = api.call("GET", path, params={"status": "completed", "limit": 500,
                                                 "offset": offset})["requests"]
            stamps += [r["updated_at"] for r in page]
    span = (max(stamps) - min(stamps)) / 1000 if stamps else 0
    if pending:
        log(f"replay: {len(stamps)}/{total} completed after {timeout:.0f} s")
    return {"agents": len(agents), "each": each, "requests": total, "completed": len(stamps),
            "timed_out": bool(pending), "timeout": timeout,
            "queue_seconds": queue_seconds, "queue_rps": total / queue_seconds,
            "start_call_seconds": running - started, "wall_seconds": finished - started,
            "wall_rps": len(stamps) / (finished - started),
            "drain_seconds": span, "drain_rps": (len(stamps) - 1) / span if span else None}


# --------------------------------------------------------------------------- A/B


def measure_ab(client, current: Stack, current_url: str, rounds: int, seconds: int,
               share: cost.CpuShare, stacks: list[Stack]) -> dict:
    """wrk c=16 (persist on) against the baseline commit's stack and this one, in turn.

    The baseline stack is started from an export of ``ab.BASELINE`` beside the current
    one (``stacks`` lists it meanwhile, for the CPU share) and torn down at the end.
    """
    if not ab.has_commit(ROOT, ab.BASELINE):
        return {"commit": ab.BASELINE, "skipped": f"commit {ab.BASELINE} is not in "
                "this checkout"}
    with ab.exported(ROOT, ab.BASELINE) as tree:
        base = Stack(current.data_dir / f"baseline-{ab.BASELINE}", root=tree,
                     monitor=current.monitor)
        base.data_dir.mkdir()
        stacks.append(base)
        try:
            log(f"A/B: starting a stack from {ab.BASELINE} ({tree}, prefix {base.prefix})")
            base.start()
            agent, _ = deploy_upstreams(Api(base.url, base.token), base.prefix)
            base_url = f"{base.url}/agent/{agent['name']}/"
            wait_http(base_url)
            sides = {"baseline": (base, base_url), "current": (current, current_url)}

            def load(stack: Stack, url: str) -> Callable[[], tuple[dict, dict]]:
                meter = cost.Meter(lambda: [p.pid for p in stack.servers])
                return lambda: cost.measure(meter, lambda: wrk(url, 2, 16, seconds),
                                            IDLE_WINDOW)

            for _, url in sides.values():
                wrk(url, 2, 16, 2)  # warm-up
            results = ab.alternate({side: load(*target) for side, target in sides.items()},
                                   rounds)
        finally:
            share.pause()
            try:
                base.tear_down(client)
            finally:
                stacks.remove(base)
                share.resume()
    log(f"A/B: {results}")
    return {"commit": ab.BASELINE, "rounds": rounds, "seconds": seconds, "sides": results,
            "ratio": results["current"]["rps"] / results["baseline"]["rps"]}


# --------------------------------------------------------------------------- report


def check(value: float | None, target: float, *, at_least: bool,
          unit: Callable[[float], str]) -> str:
    """``**PASS**``, or ``**MISS** by <shortfall> (<share of the target> %)``."""
    if value is None:
        return "**MISS** (not measured)"
    if (value >= target) if at_least else (value <= target):
        return "**PASS**"
    short = abs(value - target)
    return f"**MISS** by {unit(short)} ({short / target:.0%})".replace("%)", " %)")


def ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def rps(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def us(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} µs"


def times(value: float) -> str:
    return f"{value:.2f}×"


def calls(breakdown: dict[str, float]) -> str:
    return ", ".join(f"`{name.upper()}` {n:g}" for name, n in breakdown.items()) or "none"


def row(label: str, cells: list[str], target: str = "", verdict: str = "") -> str:
    return f"| {label} | {' | '.join(cells)} | {target} | {verdict} |"


def render(results: dict, quick: bool) -> str:
    http_ = results["http"]
    columns = [http_[k] for k in ("direct", "nginx", "proxy_off", "proxy_on")]
    d, nx, off, on = columns
    commands = results["commands"]
    sse = results["sse"]
    held = results["held"]

    def each(level: str, key: str, fmt: Callable[[float], str]) -> list[str]:
        return [fmt(c[level][key]) for c in columns]

    def costed(key: str, fmt: Callable[[float], str], first: int = 2) -> list[str]:
        return ["—"] * first + [fmt(c["c16"]["cost"][key]) for c in columns[first:]]

    def over_nginx(c: dict) -> str:
        return " / ".join(times(x) for x in (c["c16"]["rps"] / nx["c16"]["rps"],
                                              c["c64"]["rps"] / nx["c64"]["rps"],
                                              c["c1"]["p50_ms"] / nx["c1"]["p50_ms"]))

    def errs(r: dict) -> str:
        return " / ".join(f"{r[k]['errors']}/{r[k]['non2xx']}" for k in ("c1", "c16", "c64"))

    overhead = on["c1"]["p50_ms"] - d["c1"]["p50_ms"]
    ttft_overhead = sse["proxy_on"]["ttft_ms"] - sse["direct"]["ttft_ms"]
    on_cpu = on["c16"]["cost"]["cpu_us"]
    held_cell = (f"{held['alive_at_end']} of {held['requested']} ({held['agents']} agents; "
                 f"first tokens in {held['open_seconds']:.1f} s)")
    if held["errors"]:
        held_cell += "; failed: " + ", ".join(
            f"{n} × {reason}" for reason, n in held["reasons"].items())
    if held["ended_early"]:
        held_cell += f"; {held['ended_early']} ended before the holder let go"
    health_cell = " / ".join(ms(held[f"health_{k}_ms"]) for k in ("p50", "p99", "max"))
    if held["health_failed"]:
        health_cell += f"; {held['health_failed']} probes failed"
    rss_cell = "—" if held["rss_per_stream_kib"] is None else (
        f"{held['rss_per_stream_kib']:.0f} KiB ({held['rss_before_kib'] / 1024:.0f} → "
        f"{held['rss_open_kib'] / 1024:.0f} MiB)")
    blank = ["", "", ""]
    rows = [
        "| measurement | direct to container | nginx | Agentainer, persist off "
        "| Agentainer, persist on | target (persist on) | |",
        "|---|---:|---:|---:|---:|---|---|",
        row("p50 latency, c=1", each("c1", "p50_ms", ms),
            f"≤ direct + {TARGET_P50_OVERHEAD_MS:g} ms (+{overhead:.2f} ms)",
            check(overhead, TARGET_P50_OVERHEAD_MS, at_least=False, unit=ms)),
        row("p99 latency, c=1", each("c1", "p99_ms", ms)),
        row("req/s, c=16", each("c16", "rps", rps), f"≥ {rps(TARGET_RPS_C16)}",
            check(on["c16"]["rps"], TARGET_RPS_C16, at_least=True,
                  unit=lambda v: f"{rps(v)} req/s")),
        row("p99 latency, c=16", each("c16", "p99_ms", ms)),
        row("req/s, c=64", each("c64", "rps", rps)),
        row("p99 latency, c=64", each("c64", "p99_ms", ms)),
        row("socket errors / non-2xx (c=1 / c=16 / c=64)", [errs(c) for c in columns]),
        row("÷ nginx: req/s c=16 / req/s c=64 / p50 c=1",
            [over_nginx(d), "1", over_nginx(off), over_nginx(on)]),
        row("proxy's CPU per request, c=16 (nginx: master and workers; Agentainer: both "
            "servers)", costed("cpu_us", us, first=1), f"≤ {us(TARGET_CPU_US)}",
            check(on_cpu, TARGET_CPU_US, at_least=False, unit=us)),
        row("Redis CPU per request, c=16", costed("redis_cpu_us", us)),
        row("Redis commands per request, c=16: executed (INFO commandstats)",
            costed("redis_commands", lambda v: f"{v:.1f}")),
        row("… of which the clients sent (MONITOR, a run of its own)",
            ["—", "—"] + [f"{commands[k]['sent']:.1f}" for k in ("proxy_off", "proxy_on")]),
        row(f"SSE first token (median of {sse['direct']['runs']})",
            [ms(sse["direct"]["ttft_ms"]), "", "", ms(sse["proxy_on"]["ttft_ms"])],
            f"≤ direct + {TARGET_TTFT_OVERHEAD_MS:g} ms (+{ttft_overhead:.2f} ms)",
            check(ttft_overhead, TARGET_TTFT_OVERHEAD_MS, at_least=False, unit=ms)),
        row("SSE mean gap between tokens (50 ms pacing)",
            [ms(sse["direct"]["gap_ms"]), "", "", ms(sse["proxy_on"]["gap_ms"])]),
        row(f"{held['requested']:,} SSE streams held open: open at the end", blank
            + [held_cell], f"{TARGET_STREAMS:,} held",
            check(min(held["alive_at_end"], held["opened"]), TARGET_STREAMS, at_least=True,
                  unit=lambda v: f"{v:.0f} streams")),
        row(f"… `GET /health` meanwhile, p50 / p99 / max of {held['probes']}", blank
            + [health_cell], f"p99 < {TARGET_HEALTH_P99_MS:g} ms",
            check(held["health_p99_ms"], TARGET_HEALTH_P99_MS, at_least=False, unit=ms)),
        row("… the servers' memory (RSS) per held stream", blank + [rss_cell]),
        replay_row(results["replay"], TARGET_REPLAY_RPS),
        replay_row(results["replay_many"], TARGET_REPLAY_MANY_RPS),
        *wake.rows(results["wake"], ms, check),
        *ab_rows(results["ab"]),
    ]
    durations = "c=1: 5 s, c=16 and c=64: 10 s" if not quick else "QUICK RUN (short durations)"
    nginx_ = results["nginx"]
    on_cost, on_commands = on["c16"]["cost"], commands["proxy_on"]
    notes = [
        f"Measured with `make bench` on {results['machine']}, {results['date']} "
        f"(commit {results['commit']}); load generator, proxies, Redis and agents all share "
        f"those cores (1-minute load average {results['load_start']:.2f} when it started; "
        f"processes outside this run used {results['other_cpu']:.0%} of the CPU while it "
        "measured).",
        "",
        *rows,
        "",
        f"- HTTP rows: `wrk --latency` ({durations}; `-t1 -c1`, `-t2 -c16`, `-t2 -c64`) "
        "against a minimal asyncio upstream (`bench/upstream`): straight to the container's "
        "bridge IP; through nginx; through `/agent/<name>/` on two `agentainer-server` "
        "processes sharing one port. \"persist off\" is an agent deployed with "
        "`\"persist\": false` (no journal); \"persist on\" journals every request in Redis "
        "(AOF, fsync every second). nginx and \"direct\" reach the persist-on agent's "
        "container; the persist-off agent has a container of its own from the same image.",
        f"- nginx: Debian's {nginx_['version']}, started by the benchmark on a free loopback "
        "port with a configuration of its own (`bench/nginx.py`): `worker_processes auto` "
        f"({nginx_['workers']} workers here, as many as the Agentainer servers), "
        "`access_log off`, an upstream to the container's IP:8000 with `keepalive 128`, "
        "`proxy_http_version 1.1` and `proxy_set_header Connection \"\"`; stopped by PID.",
        f"- The stack: {results['stack']} (the servers share one port with SO_REUSEPORT), "
        "default settings except `queue_limit` 5000 and `log_level` WARNING.",
        "- CPU rows: utime + stime (`/proc/<pid>/stat`) of the proxy's processes over the "
        "c=16 run, divided by the requests wrk counted; Redis's from `INFO cpu`. A "
        f"{IDLE_WINDOW:g} s idle window just before each costed run measures the background "
        "(the monitor, the workers, the janitor), subtracted pro rata: with persist on "
        f"{us(on_cost['background_cpu_us'])} of server CPU and "
        f"{on_cost['redis_background_commands']:.2f} Redis commands per request.",
        "- Redis commands: \"executed\" is `total_commands_processed` over the c=16 run, "
        "which counts the commands Lua scripts call as well as those the clients send (on "
        "this Redis an `EVAL` of three `HSET`s counts 4, as commandstats does): with persist "
        f"on, per request, {calls(on_cost['redis_calls'])}. \"sent\" comes from another "
        f"c=16 run ({commands['seconds']} s) with `MONITOR` attached, which marks a script's "
        "calls `[0 lua]` (MONITOR costs Redis CPU, hence the run of its own), background "
        f"subtracted alike: per request, the clients sent {calls(on_commands['sent_calls'])}"
        f"; the scripts called {calls(on_commands['scripted_calls'])}. Persist off: sent "
        f"{calls(commands['proxy_off']['sent_calls'])}.",
        ab_note(results["ab"]),
        "- SSE rows: `agentainer/stream-agent`, 20 tokens 50 ms apart, a keep-alive raw-socket "
        "client timing each `data:` event from just before it writes the request; proxied "
        f"with persist on. The client needed {sse['direct']['connects']} connection(s) for "
        f"{sse['direct']['streams']} direct streams and {sse['proxy_on']['connects']} for "
        f"{sse['proxy_on']['streams']} proxied ones"
        + (": the proxy closes the connection after each streamed response, so each "
           "proxied stream includes a TCP connect." if sse['proxy_on']['connects'] > 1
           else ": all kept alive."),
        f"- Held streams: {held['requested']:,} concurrent streams through the proxy (persist "
        f"on), spread over {held['agents']} stream agents, "
        f"{held['requested'] // held['agents']:,} each (so that `agent_max_inflight`, the "
        "cap per agent and server process, is not what this row measures), one token every "
        f"{HELD_TOKEN_DELAY:g} s each, opened {OPEN_CONCURRENCY} at a time; `/health` (a "
        "fresh connection each probe) answered in "
        f"{ms(held['baseline_p50_ms'])} p50 / {ms(held['baseline_max_ms'])} max with no "
        "streams open. Memory: the two servers' VmRSS (`/proc/<pid>/status`) with the "
        "streams open less before they opened, over the streams opened.",
        replay_note(results["replay"], results["replay_many"]),
        f"- Wake rows: `agentainer/echo-agent` deployed with `idle_timeout` "
        f"{wake.IDLE_TIMEOUT} and `idle_action` pause, then stop; each run waits until the "
        "monitor has paused (stopped) it, then times one proxied request sent with "
        "`Prefer: wait=10` on a fresh connection: the first byte, and the answer (the first "
        "byte when the server holds the request; else it answers 202 at once and the "
        "answer is the journal's completion time of the replayed request).",
        redis_note(results.get("redis")),
    ]
    return "\n".join(notes)


def replay_row(replay: dict, target: float) -> str:
    agents = replay["agents"]
    label = (f"replay drain, {replay['requests']:,} queued requests" if agents == 1 else
             f"replay drain, {agents} agents × {replay['each']:,} queued, resumed together")
    cell = (f"{rps(replay['drain_rps'])} req/s ({replay['wall_seconds']:.1f} s from resume "
            f"call{'s' if agents > 1 else ''} to all completed: {rps(replay['wall_rps'])} "
            "req/s)")
    if replay["timed_out"]:
        cell += (f"; only {replay['completed']:,} of {replay['requests']:,} completed in "
                 f"{replay['timeout']:.0f} s")
    return row(label, ["", "", "", cell], f"≥ {rps(target)} req/s",
               check(replay["drain_rps"], target, at_least=True,
                     unit=lambda v: f"{rps(v)} req/s"))


def ab_rows(result: dict) -> list[str]:
    label = f"A/B against {result['commit']} (the commit before issue 12): req/s, c=16"
    target = f"≥ {TARGET_AB_RATIO:g}× the commit before"
    if "skipped" in result:
        return [row(label, ["", "", "", f"not measured: {result['skipped']}"], target,
                    check(None, TARGET_AB_RATIO, at_least=True, unit=times))]
    base, current = result["sides"]["baseline"], result["sides"]["current"]
    return [
        row(f"{label}, median of {result['rounds']} alternating",
            ["", "", "", f"{result['commit']}: {rps(base['rps'])}; this tree: "
             f"{rps(current['rps'])}: {times(result['ratio'])}"], target,
            check(result["ratio"], TARGET_AB_RATIO, at_least=True, unit=times)),
        row("… server CPU per request (median)", ["", "", "", f"{result['commit']}: "
            f"{us(base['cpu_us'])}; this tree: {us(current['cpu_us'])}"]),
    ]


def ab_note(result: dict) -> str:
    if "skipped" in result:
        return f"- A/B: not measured ({result['skipped']})."
    return (f"- A/B: commit {result['commit']} (`bench/ab.py`: the last before issue 12's "
            "work), exported with `git archive` into a temporary directory, runs a second, "
            "complete stack (its own redis-server and networks; the same venv, with that "
            "tree's `bin/` and, first on PYTHONPATH, its package) beside this one, before "
            "anything else is measured: each has the two upstream agents of the HTTP rows "
            "and no other, and no journal yet. "
            f"{result['rounds']} round(s) of wrk `-t2 -c16` for {result['seconds']} s "
            "against each one's persist-on agent, the order reversed every round (A B, B A, "
            "...), one stack loaded while the other idles; medians of the rounds, server "
            "CPU as in the CPU rows.")


def replay_note(one: dict, many: dict) -> str:
    return (f"- Replay: {one['requests']:,} requests queued through the proxy while the "
            f"agent was paused ({rps(one['queue_rps'])} req/s to queue, 16 client threads, "
            "every one 202), then the agent resumed; then "
            f"{many['agents']} agents with {many['each']:,} each, resumed by concurrent "
            "calls (paused, not stopped: a start's container start is not what this "
            "measures). The drain rate is (completed − 1) over the first to the last "
            "completion, by the journal's timestamps, across the agents (one drain job per agent, so one "
            "worker delivers an agent's requests in order).")


def redis_note(stats: dict | None) -> str:
    if not stats:
        return ""
    busiest = ", ".join(f"`{name.removeprefix('cmdstat_').upper()}` {v['cpu_s']:.1f} s "
                        f"({v['calls']:,} calls)" for name, v in
                        list(stats["busiest"].items())[:3])
    return (f"- Redis over the whole run: {stats['used_cpu_s']:.1f} s of CPU, "
            f"{stats['keys']:,} keys at the end; busiest commands: {busiest}.")


def redis_stats(url: str) -> dict:
    """Keys held and the busiest commands of the run (evidence for the report)."""
    import redis
    client = redis.Redis.from_url(url, socket_timeout=10)
    stats = client.info("commandstats")
    cpu = client.info("cpu")
    busiest = sorted(stats.items(), key=lambda item: -item[1]["usec"])[:5]
    return {"keys": client.dbsize(),
            "used_cpu_s": round(float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), 1),
            "busiest": {name: {"calls": v["calls"], "usec_per_call": v["usec_per_call"],
                               "cpu_s": round(v["usec"] / 1e6, 2)} for name, v in busiest}}


# --------------------------------------------------------------------------- main


def build_upstream(client) -> None:
    try:
        client.images.get(BASE_IMAGE)
    except Exception:  # noqa: BLE001
        raise SystemExit(f"{BASE_IMAGE} is missing; run `make images` first") from None
    log(f"building {UPSTREAM_IMAGE} from bench/upstream")
    client.images.build(path=str(HERE / "upstream"), tag=UPSTREAM_IMAGE, rm=True,
                        forcerm=True, pull=False)


def deploy_upstreams(api: Api, prefix: str) -> tuple[dict, dict]:
    """The two upstream agents of the HTTP rows: persist on, persist off."""
    return (api.deploy(f"{prefix}-on", UPSTREAM_IMAGE, start=True),
            api.deploy(f"{prefix}-off", UPSTREAM_IMAGE, start=True, persist=False))


def nginx_version(binary: str) -> str:
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    return (done.stderr or done.stdout).strip().removeprefix("nginx version: ")


def run(args: argparse.Namespace) -> dict:
    import docker

    from tests.helpers import free_port

    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (make bench installs it: apt-get install wrk)")
    nginx_bin = find_nginx()
    if not nginx_bin:
        raise SystemExit("nginx is not installed (make bench installs it: apt-get install "
                         "nginx)")
    client = docker.from_env()
    client.ping()
    build_upstream(client)
    try:
        client.images.get(STREAM_IMAGE)
    except docker.errors.ImageNotFound:
        raise SystemExit(f"{STREAM_IMAGE} is missing; run `make images` first") from None

    data_dir = Path(tempfile.mkdtemp(prefix="agentainer-bench-"))
    stack = Stack(data_dir, monitor=not args.no_monitor)
    stacks = [stack]
    nginx: Nginx | None = None
    ok = False
    try:
        log(f"starting the stack (data dir {data_dir}, prefix {stack.prefix})")
        stack.start()
        api = Api(stack.url, stack.token)
        net = stack.networks[0]
        name = lambda what: f"{stack.prefix}-{what}"  # noqa: E731

        # NOTE: the A/B comes first and the other agents after it: it finds both stacks
        # alike, fresh, with the same two agents
        on, off = deploy_upstreams(api, stack.prefix)
        direct_ip = container_ip(client, on["id"], net)
        targets = {"direct": f"http://{direct_ip}:8000/",
                   "proxy_off": f"{stack.url}/agent/{off['name']}/",
                   "proxy_on": f"{stack.url}/agent/{on['name']}/"}
        for url in targets.values():
            wait_http(url)

        results: dict = {"load_start": os.getloadavg()[0], "stack": stack.describe(),
                         "machine": machine(), "commit": git_commit(),
                         "date": datetime.date.today().isoformat()}
        share = cost.CpuShare(
            lambda: [p.pid for s in stacks for p in s.processes if p.poll() is None]
            + (nginx.pids() if nginx else []),
            lambda: [n for s in stacks for n in s.networks], client)
        servers = lambda: [p.pid for p in stack.servers]  # noqa: E731

        if args.skip_ab:
            results["ab"] = {"commit": ab.BASELINE, "skipped": "--skip-ab"}
        else:
            log(f"a. A/B against {ab.BASELINE}, {args.ab_rounds} round(s)")
            try:
                results["ab"] = measure_ab(client, stack, targets["proxy_on"], args.ab_rounds,
                                           3 if args.quick else 10, share, stacks)
            except Exception as ex:  # noqa: BLE001 - reported in the table, the rest goes on
                log(f"A/B failed: {ex!r}")
                results["ab"] = {"commit": ab.BASELINE, "skipped": f"failed ({ex})"[:300]}

        nginx = Nginx(nginx_bin, data_dir / "nginx", f"{direct_ip}:8000", free_port())
        nginx.start()
        targets = {"direct": targets["direct"], "nginx": nginx.url,
                   "proxy_off": targets["proxy_off"], "proxy_on": targets["proxy_on"]}
        wait_http(nginx.url)
        results["nginx"] = {"version": nginx_version(nginx_bin),
                            "workers": len(nginx.pids()) - 1}
        log("b. HTTP latency and throughput (wrk), and what the c=16 runs cost")
        results["http"] = measure_http(targets, {
            "nginx": cost.Meter(nginx.pids),
            "proxy_off": cost.Meter(servers, stack.redis_url),
            "proxy_on": cost.Meter(servers, stack.redis_url)}, args.quick)
        nginx.stop()
        seconds = 2 if args.quick else 3
        results["commands"] = {"seconds": seconds, **measure_commands(stack, {
            "proxy_off": targets["proxy_off"], "proxy_on": targets["proxy_on"]}, seconds)}

        streams = [api.deploy(name(f"sse{index}"), STREAM_IMAGE, start=True)
                   for index in range(args.stream_agents)]
        replay_one = api.deploy(name("replay"), UPSTREAM_IMAGE, start=True)
        replay_many = [api.deploy(name(f"replay{index}"), UPSTREAM_IMAGE, start=True)
                       for index in range(REPLAY_AGENTS)]
        stream_ip = container_ip(client, streams[0]["id"], net)
        for url in (f"http://{stream_ip}:8000/health",
                    *(f"{stack.url}/agent/{s['name']}/health" for s in streams)):
            wait_http(url)

        log("c. SSE first token and token gaps")
        results["sse"] = measure_sse({
            "direct": (stream_ip, 8000, "/v1/chat/completions"),
            "proxy_on": ("127.0.0.1", stack.port,
                         f"/agent/{streams[0]['name']}/v1/chat/completions"),
        }, runs=5 if args.quick else 20, tokens=20, delay=0.05)
        log(f"SSE: {results['sse']}")

        log(f"d. {args.streams} SSE streams held open over {len(streams)} agents while "
            "probing /health")
        results["held"] = measure_held_streams(
            stack.port, [f"/agent/{s['name']}/v1/chat/completions" for s in streams],
            args.streams, probes=30 if args.quick else 100, budget=60, servers=servers())
        log(f"held streams: {results['held']}")
        # NOTE: the proxy reads on what its clients left (up to capture_limit or the
        # stream's end, a minute on): removing the agents ends those reads before replay
        for agent in streams:
            api.call("DELETE", f"/agents/{agent['id']}")
        time.sleep(3)

        log(f"e. replay drain of {args.replay} queued requests, then of "
            f"{REPLAY_AGENTS} × {args.replay_each}")
        results["replay"] = measure_replay(api, [replay_one], args.replay, timeout=120)
        log(f"replay: {results['replay']}")
        results["replay_many"] = measure_replay(api, replay_many, args.replay_each,
                                                timeout=120)
        log(f"replay, {REPLAY_AGENTS} agents: {results['replay_many']}")

        log("f. wake from idle-paused and idle-stopped")
        results["wake"] = wake.measure_wake(stack.url, stack.token, api.deploy, name,
                                            runs=5 if args.quick else wake.RUNS)
        log(f"wake: {results['wake']}")
        results["redis"] = redis_stats(stack.redis_url)
        log(f"redis: {results['redis']}")
        results["other_cpu"] = share.other_share()
        log(f"CPU used by processes other than this run's: {results['other_cpu']:.1%}")
        ok = True
        return results
    finally:
        log("cleaning up")
        try:
            if nginx is not None:
                nginx.stop()
        finally:
            try:
                for each in reversed(stacks):
                    each.tear_down(client)
            finally:
                if ok and not args.keep_logs:
                    shutil.rmtree(data_dir, ignore_errors=True)
                else:
                    log(f"logs kept in {data_dir}")
                client.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--hold-streams":
        return hold_streams_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-readme", action="store_true", help="print the table only")
    parser.add_argument("--json", metavar="FILE", help="also write the raw figures here")
    parser.add_argument("--quick", action="store_true",
                        help="short runs, 100 streams, 1 A/B round (not for publishing)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the stack's logs")
    parser.add_argument("--no-monitor", action="store_true",
                        help="do not run agentainer-monitor beside the servers and workers")
    parser.add_argument("--skip-ab", action="store_true",
                        help=f"no A/B against {ab.BASELINE}")
    parser.add_argument("--ab-rounds", type=int, help="A/B rounds (default 3; quick 1)")
    parser.add_argument("--streams", type=int,
                        help=f"held streams (default {TARGET_STREAMS}; quick 100)")
    parser.add_argument("--stream-agents", type=int, default=8,
                        help="stream agents the held streams are spread over (default 8)")
    parser.add_argument("--replay", type=int,
                        help="queued requests, one agent (default 2000; quick 500)")
    parser.add_argument("--replay-each", type=int, help=f"queued requests for each of "
                        f"{REPLAY_AGENTS} agents (default 1000; quick 200)")
    args = parser.parse_args(argv)
    for option, full, quick in (("ab_rounds", 3, 1), ("streams", TARGET_STREAMS, 100),
                                ("replay", 2000, 500), ("replay_each", 1000, 200)):
        if getattr(args, option) is None:
            setattr(args, option, quick if args.quick else full)
    # NOTE: SIGTERM (make interrupted, timeout) still runs the cleanup in run()'s finally
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = run(args)
    table = render(results, args.quick)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if not args.no_readme and not args.quick:
        write_block("bench", table, heading="## Performance")
        log(f"wrote the table into {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
