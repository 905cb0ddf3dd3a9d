#!/usr/bin/env python3
"""Agentainer benchmark: ``make bench`` (or ``.venv/bin/python bench/run.py``).

Starts an isolated stack of its own (a private redis-server with AOF, two
``agentainer-server`` processes sharing one port, two ``agentainer-worker`` processes and,
as supervisord.conf has it, ``agentainer-monitor``; networks named with a random prefix),
deploys agents through the REST API, measures

  a. latency and throughput with wrk: straight to a container vs through the proxy with
     the journal off (``"persist": false``) and on;
  b. SSE time to first token and the gap between tokens, direct vs proxied;
  c. /health latency while 200 SSE streams are held open through the proxy;
  d. the replay drain rate of 2000 queued requests;
  e. wake from idle: a request to an echo agent the idle rule paused, then stopped, until
     its first byte and its answer (bench/wake.py);

prints a markdown table and writes it into README.md between ``<!-- bench:start -->``
and ``<!-- bench:end -->``. Everything it created is removed at the end, whatever happens.

Options: ``--no-readme`` (print only), ``--json FILE`` (raw figures), ``--quick`` (short
runs, for trying the script out; never written into README.md), ``--no-monitor``,
``--keep-logs``, ``--streams N``, ``--replay N``. Needs wrk (``make bench`` installs it),
redis-server, Docker and the example images (``make images``).
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
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.readme import README, git_commit, machine, write_block  # noqa: E402
from bench import wake  # noqa: E402

HERE = Path(__file__).resolve().parent
BIN = ROOT / "bin"

UPSTREAM_IMAGE = "agentainer/bench-upstream:latest"
STREAM_IMAGE = "agentainer/stream-agent:latest"
BASE_IMAGE = "agentainer/python-base:latest"

# Settings for the bench stack: the defaults, except a queue that can hold the replay run.
STACK_SETTINGS = {"AGENTAINER_QUEUE_LIMIT": "5000", "AGENTAINER_LOG_LEVEL": "WARNING"}

# Targets (see the table's last column).
TARGET_P50_OVERHEAD_MS = 1.0
TARGET_RPS_C16 = 1500.0
TARGET_TTFT_OVERHEAD_MS = 2.0
TARGET_STREAMS = 200
TARGET_HEALTH_MS = 50.0
TARGET_REPLAY_RPS = 300.0

OPEN_CONCURRENCY = 4  # held streams being opened at once (see _hold_streams)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """Redis, two servers on one port (SO_REUSEPORT) and two replay workers, all ours."""

    data_dir: Path
    prefix: str = field(default_factory=lambda: f"agbench{secrets.token_hex(3)}")
    port: int = 0
    redis_port: int = 0
    env: dict = field(default_factory=dict)
    processes: list = field(default_factory=list)
    token: str = ""
    monitor: bool = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def networks(self) -> list[str]:
        return [f"{self.prefix}-net", f"{self.prefix}-internal"]

    def _spawn(self, command: list[str], log_name: str) -> subprocess.Popen:
        with open(self.data_dir / log_name, "ab") as out:
            process = subprocess.Popen(command, env=self.env, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.processes.append(process)
        return process

    def start(self) -> None:
        import redis
        import requests

        from tests.helpers import free_port, wait_for

        redis_bin = shutil.which("redis-server")
        if not redis_bin:
            raise SystemExit("redis-server is not installed (make deps installs it)")
        (self.data_dir / "redis").mkdir()
        self.redis_port = free_port()
        self._spawn([redis_bin, "--bind", "127.0.0.1", "--port", str(self.redis_port),
                     "--dir", str(self.data_dir / "redis"), "--appendonly", "yes",
                     "--appendfsync", "everysec", "--save", "", "--daemonize", "no"],
                    "redis.log")
        wait_for(redis.Redis.from_url(self.redis_url).ping, timeout=10, message="redis-server")

        conf = self.data_dir / "empty.conf"
        conf.write_text("[agentainer]\n")
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTAINER_")}
        # NOTE: this redis-server, password-less, is an external Redis to the stack
        env.update(STACK_SETTINGS, AGENTAINER_CONFIG=str(conf),
                   AGENTAINER_REDIS_URL=self.redis_url, AGENTAINER_EMBEDDED_REDIS="false",
                   AGENTAINER_PORT=str(self.port),
                   AGENTAINER_DATA_DIR=str(self.data_dir),
                   AGENTAINER_NETWORK=self.networks[0],
                   AGENTAINER_INTERNAL_NETWORK=self.networks[1],
                   AGENTAINER_VOLUME_ROOTS=str(self.data_dir / "volumes"))
        self.env = env

        def healthy() -> bool:
            return requests.get(self.url + "/health", timeout=2).ok

        # NOTE: one after the other: both would create the networks at start otherwise
        for index in range(2):
            server = self._spawn([sys.executable, str(BIN / "agentainer-server")],
                                 f"server-{index}.log")
            wait_for(lambda: server.poll() is None and healthy(), timeout=60,
                     message=f"agentainer-server #{index + 1}")
            if server.poll() is not None:
                raise RuntimeError(f"agentainer-server #{index + 1} exited; see "
                                   f"{self.data_dir}/server-{index}.log")
        self.token = (self.data_dir / "admin.token").read_text().strip()
        for index in range(2):
            self._spawn([sys.executable, str(BIN / "agentainer-worker")], f"worker-{index}.log")
        if self.monitor and (BIN / "agentainer-monitor").exists():
            # NOTE: as supervisord.conf runs the stack (the monitor also hosts the janitor)
            self._spawn([sys.executable, str(BIN / "agentainer-monitor")], "monitor.log")
        time.sleep(0.5)
        dead = [p.args[-1] for p in self.processes if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{dead} exited at start; see the logs in {self.data_dir}")

    def agent_ids(self) -> set[str]:
        import redis
        try:
            client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
            return {key.decode().rsplit(":", 1)[1]
                    for key in client.scan_iter("agentainer:agent:*")}
        except Exception as ex:  # noqa: BLE001 - cleanup goes on with the network names
            log(f"cleanup: cannot list agents from redis ({ex})")
            return set()

    def stop_processes(self) -> None:
        # servers and workers first, redis last
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
        self.processes.clear()


def clean_docker(client, stack: Stack, agent_ids: set[str]) -> None:
    """Remove this run's containers (labelled managed) and its networks."""
    for container in client.containers.list(all=True,
                                            filters={"label": "agentainer.managed=1"}):
        networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        if container.labels.get("agentainer.id") in agent_ids or any(
                name in stack.networks for name in networks):
            try:
                container.remove(force=True, v=True)
            except Exception as ex:  # noqa: BLE001
                log(f"cleanup: cannot remove container {container.name}: {ex}")
    for network in client.networks.list(names=stack.networks):
        if network.name in stack.networks:
            try:
                network.remove()
            except Exception as ex:  # noqa: BLE001
                log(f"cleanup: cannot remove network {network.name}: {ex}")


class Api:
    def __init__(self, url: str, token: str) -> None:
        import requests
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, expect: int = 200, **kwargs) -> dict:
        kwargs.setdefault("timeout", 120)
        reply = self.session.request(method, self.url + path, **kwargs)
        if reply.status_code != expect:
            raise RuntimeError(f"{method} {path}: {reply.status_code} {reply.text[:500]}")
        return reply.json()["data"]

    def deploy(self, name: str, image: str, **fields) -> dict:
        return self.call("POST", "/agents", 201, json={"name": name, "image": image, **fields})


def container_ip(client, agent_id: str, network: str) -> str:
    found = client.containers.list(filters={"label": f"agentainer.id={agent_id}"})
    if not found:
        raise RuntimeError(f"no running container for {agent_id}")
    networks = found[0].attrs["NetworkSettings"]["Networks"]
    return (networks.get(network) or next(iter(networks.values())))["IPAddress"]


def redis_stats(url: str) -> dict:
    """Keys held and the busiest commands of the run (evidence for the report)."""
    import redis
    client = redis.Redis.from_url(url, socket_timeout=10)
    stats = client.info("commandstats")
    busiest = sorted(stats.items(), key=lambda item: -item[1]["usec"])[:5]
    return {"keys": client.dbsize(),
            "used_cpu_s": round(float(client.info("cpu")["used_cpu_sys"])
                                + float(client.info("cpu")["used_cpu_user"]), 1),
            "busiest": {name: {"calls": v["calls"], "usec_per_call": v["usec_per_call"],
                               "cpu_s": round(v["usec"] / 1e6, 2)} for name, v in busiest}}


def wait_http(url: str, timeout: float = 30) -> None:
    import requests

    from tests.helpers import wait_for
    wait_for(lambda: requests.get(url, timeout=2).status_code == 200, timeout=timeout,
             message=url)


# --------------------------------------------------------------------------- CPU share


class CpuMeter:
    """How much of the machine's CPU went to processes other than this run's.

    Ours: this script and its waited-for children (wrk, the stream holder), the stack's
    processes, and the processes in this run's containers. Everything else (another
    user's tests, dockerd, kernel threads) is "other"; the figure says how undisturbed
    the run was.
    """

    HZ = os.sysconf("SC_CLK_TCK")

    def __init__(self, stack: "Stack", client) -> None:
        self._stack = stack
        self._client = client
        self._start = self._sample()

    def _containers(self) -> set[str]:
        try:
            return {c.id for net in self._stack.networks
                    for c in self._client.containers.list(filters={"network": net})}
        except Exception:  # noqa: BLE001 - the figure is best effort
            return set()

    @staticmethod
    def _proc_ticks(pid: str) -> int:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            return 0

    def _sample(self) -> tuple[float, float, float]:
        import resource
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        busy = sum(int(fields[i]) for i in (0, 1, 2, 5, 6, 7)) / self.HZ
        ours = sum(r.ru_utime + r.ru_stime for r in (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN)))
        ours += sum(self._proc_ticks(str(p.pid)) for p in self._stack.processes
                    if p.poll() is None) / self.HZ
        containers = self._containers()
        if containers:
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    cgroup = (entry / "cgroup").read_text()
                except OSError:
                    continue
                if any(cid in cgroup for cid in containers):
                    ours += self._proc_ticks(entry.name) / self.HZ
        return time.monotonic(), busy, ours

    def other_share(self) -> float:
        """The share of all CPUs (0..1) used by others since the meter started."""
        t0, busy0, ours0 = self._start
        t1, busy1, ours1 = self._sample()
        capacity = (t1 - t0) * (os.cpu_count() or 1)
        return max(0.0, ((busy1 - busy0) - (ours1 - ours0)) / capacity) if capacity else 0.0


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


def measure_http(targets: dict[str, str], quick: bool) -> dict:
    """wrk c=1, c=16, c=64 against each target (runs interleaved by load level)."""
    c1, cn = (2, 3) if quick else (5, 10)
    results: dict = {name: {} for name in targets}
    for name, url in targets.items():
        log(f"warm-up {name}: {url}")
        wrk(url, 2, 16, 2)
    for label, threads, conns, seconds in (("c1", 1, 1, c1), ("c16", 2, 16, cn),
                                           ("c64", 2, 64, cn)):
        for name, url in targets.items():
            result = wrk(url, threads, conns, seconds)
            results[name][label] = result
            log(f"{name} {label}: p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms,"
                f" {result['rps']:.0f} req/s, errors {result['errors']}, "
                f"non-2xx {result['non2xx']}")
            time.sleep(1)  # let the journal's fsync and the janitor settle between runs
    return results


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


async def _hold_streams(host: str, port: int, path: str, count: int, tokens: int,
                        delay: float, open_timeout: float) -> None:
    """Child process: open ``count`` streams, report, hold them until stdin says stop."""
    request = sse_request(host, port, path, sse_body(tokens, delay))
    state = {"opened": 0, "ended": 0, "errors": 0, "events": 0, "first_error": ""}
    all_open = asyncio.Event()
    stop = asyncio.Event()
    alive: set[int] = set()
    # NOTE: opened a few at a time: the stream agent (http.server) listens with a backlog
    # of 5, and a burst of connects overflows it (the proxy then times out connecting)
    opening = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def first_token(index: int):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            return reader, writer, await read_first_token(reader, writer)
        except BaseException:
            writer.close()
            raise

    async def read_first_token(reader, writer) -> bytes:
        writer.write(request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError(f"closed before the response: {buf[:200]!r}")
            buf += chunk
        if not buf.startswith(b"HTTP/1.1 200"):
            raise ConnectionError(f"not 200: {buf[:300]!r}")
        while b"data: " not in buf:
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError(f"closed before the first token: {buf[:300]!r}")
            buf += chunk
        return buf

    async def one(index: int) -> None:
        writer = None
        try:
            async with opening:
                reader, writer, buf = await asyncio.wait_for(first_token(index), 15)
            state["opened"] += 1
            state["events"] += buf.count(b"data: ")
            alive.add(index)
            if state["opened"] == count:
                all_open.set()
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
            state["first_error"] = state["first_error"] or repr(ex)[:300]
            alive.discard(index)
        finally:
            if writer is not None:
                writer.close()

    def report(event: str, **extra) -> None:
        print(json.dumps({"event": event, **state, "alive": len(alive), **extra}), flush=True)

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
    host, port, path, count, tokens, delay, open_timeout, deadline = argv
    signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
    signal.alarm(int(float(deadline)))  # hard bound, whatever the parent does
    asyncio.run(_hold_streams(host, int(port), path, int(count), int(tokens), float(delay),
                              float(open_timeout)))
    return 0


def probe_health(host: str, port: int, count: int, pause: float) -> list[float]:
    """``GET /health`` on a fresh connection each time; latencies in ms."""
    latencies = []
    for _ in range(count):
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("GET", "/health")
            reply = conn.getresponse()
            reply.read()
            if reply.status != 200:
                raise RuntimeError(f"/health answered {reply.status}")
        finally:
            conn.close()
        latencies.append((time.perf_counter() - t0) * 1000)
        time.sleep(pause)
    return latencies


def measure_held_streams(port: int, path: str, count: int, probes: int,
                         budget: float) -> dict:
    """Hold ``count`` SSE streams through the proxy while probing /health."""
    baseline = probe_health("127.0.0.1", port, probes, 0.05)
    tokens, delay = int(budget * 10), 0.1  # streams outlast the whole measurement
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--hold-streams", "127.0.0.1",
         str(port), path, str(count), str(tokens), str(delay), str(budget / 2), str(budget)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in child.stdout],
                     daemon=True).start()
    deadline = time.monotonic() + budget

    def next_report() -> dict:
        remaining = max(1.0, deadline - time.monotonic())
        return json.loads(lines.get(timeout=remaining))

    try:
        opened = next_report()
        log(f"streams: {opened['opened']}/{count} got their first token in "
            f"{opened['seconds']} s (errors {opened['errors']}: {opened['first_error']})")
        time.sleep(1.0)
        during = probe_health("127.0.0.1", port, probes, 0.1)
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
    return {"requested": count, "opened": opened["opened"], "open_seconds": opened["seconds"],
            "alive_at_end": final["alive"], "errors": final["errors"],
            "ended_early": final["ended"], "first_error": final["first_error"],
            "events": final["events"],
            "health_p50_ms": statistics.median(during), "health_max_ms": max(during),
            "baseline_p50_ms": statistics.median(baseline),
            "baseline_max_ms": max(baseline), "probes": len(during)}


# --------------------------------------------------------------------------- replay drain


def measure_replay(api: Api, agent: dict, total: int, timeout: float) -> dict:
    import requests

    local = threading.local()
    url = f"{api.url}/agent/{agent['name']}/work"

    refusals: list[str] = []

    def send(index: int) -> int:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        reply = session.post(url, json={"n": index}, timeout=30)
        if reply.status_code != 202:
            refusals.append(reply.text[:300])
        return reply.status_code

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(send, range(total)))
    queue_seconds = time.monotonic() - t0
    accepted = statuses.count(202)
    if accepted != total:
        others = {s: statuses.count(s) for s in set(statuses)}
        raise RuntimeError(f"queueing: expected {total} x 202, got {others}; first: "
                           f"{refusals[0]}")
    path = f"/agents/{agent['id']}/requests"
    queued = api.call("GET", path, params={"status": "queued", "limit": 1})["total"]
    log(f"replay: {accepted} requests queued in {queue_seconds:.2f} s; queue holds {queued}")

    started = time.monotonic()
    api.call("POST", f"/agents/{agent['id']}/start")
    running = time.monotonic()
    deadline = started + timeout
    completed = 0
    while time.monotonic() < deadline:
        left = api.call("GET", path, params={"status": "queued", "limit": 1})["total"]
        if left == 0:
            completed = api.call("GET", path, params={"status": "completed", "limit": 1}
                                 )["total"]
            if completed >= total:
                break
        time.sleep(0.05)
    finished = time.monotonic()
    if completed < total:
        raise RuntimeError(f"replay: {completed}/{total} completed after {timeout:.0f} s")
    stamps = []
    for offset in range(0, total, 500):
        page = api.call("GET", path, params={"status": "completed", "limit": 500,
                                             "offset": offset})["requests"]
        stamps += [r["updated_at"] for r in page]
    span = (max(stamps) - min(stamps)) / 1000
    return {"requests": total, "queue_seconds": queue_seconds,
            "queue_rps": total / queue_seconds, "start_call_seconds": running - started,
            "wall_seconds": finished - started, "wall_rps": total / (finished - started),
            "drain_seconds": span, "drain_rps": (len(stamps) - 1) / span if span else None}


# --------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**MISS**"


def ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def rps(value: float) -> str:
    return f"{value:,.0f}"


def render(results: dict, quick: bool) -> str:
    http_ = results["http"]
    d, off, on = http_["direct"], http_["proxy_off"], http_["proxy_on"]
    sse = results["sse"]
    held = results["held"]
    replay = results["replay"]

    overhead = on["c1"]["p50_ms"] - d["c1"]["p50_ms"]
    ttft_overhead = sse["proxy_on"]["ttft_ms"] - sse["direct"]["ttft_ms"]
    streams_ok = held["alive_at_end"] >= TARGET_STREAMS and held["opened"] >= TARGET_STREAMS
    health_ok = held["health_max_ms"] < TARGET_HEALTH_MS

    def errs(r: dict) -> str:
        return " / ".join(f"{r[k]['errors']}/{r[k]['non2xx']}" for k in ("c1", "c16", "c64"))

    rows = [
        "| measurement | direct to container | proxy, persist off | proxy, persist on "
        "| target | |",
        "|---|---:|---:|---:|---|---|",
        f"| p50 latency, c=1 | {ms(d['c1']['p50_ms'])} | {ms(off['c1']['p50_ms'])} "
        f"| {ms(on['c1']['p50_ms'])} | persist on ≤ direct + {TARGET_P50_OVERHEAD_MS:g} ms "
        f"(+{overhead:.2f} ms) | {verdict(overhead <= TARGET_P50_OVERHEAD_MS)} |",
        f"| p99 latency, c=1 | {ms(d['c1']['p99_ms'])} | {ms(off['c1']['p99_ms'])} "
        f"| {ms(on['c1']['p99_ms'])} | | |",
        f"| req/s, c=16 | {rps(d['c16']['rps'])} | {rps(off['c16']['rps'])} "
        f"| {rps(on['c16']['rps'])} | ≥ {rps(TARGET_RPS_C16)} with persist on "
        f"| {verdict(on['c16']['rps'] >= TARGET_RPS_C16)} |",
        f"| p99 latency, c=16 | {ms(d['c16']['p99_ms'])} | {ms(off['c16']['p99_ms'])} "
        f"| {ms(on['c16']['p99_ms'])} | | |",
        f"| req/s, c=64 | {rps(d['c64']['rps'])} | {rps(off['c64']['rps'])} "
        f"| {rps(on['c64']['rps'])} | | |",
        f"| p99 latency, c=64 | {ms(d['c64']['p99_ms'])} | {ms(off['c64']['p99_ms'])} "
        f"| {ms(on['c64']['p99_ms'])} | | |",
        f"| socket errors / non-2xx (c=1 / c=16 / c=64) | {errs(d)} | {errs(off)} "
        f"| {errs(on)} | | |",
        f"| SSE first token (median of {sse['direct']['runs']}) | {ms(sse['direct']['ttft_ms'])} "
        f"| | {ms(sse['proxy_on']['ttft_ms'])} | ≤ direct + {TARGET_TTFT_OVERHEAD_MS:g} ms "
        f"(+{ttft_overhead:.2f} ms) | {verdict(ttft_overhead <= TARGET_TTFT_OVERHEAD_MS)} |",
        f"| SSE mean gap between tokens (50 ms pacing) | {ms(sse['direct']['gap_ms'])} | "
        f"| {ms(sse['proxy_on']['gap_ms'])} | | |",
        f"| {held['requested']} SSE streams held open: streams open at the end | | "
        f"| {held['alive_at_end']} of {held['requested']} (all first tokens in "
        f"{held['open_seconds']:.1f} s) | {TARGET_STREAMS} held | {verdict(streams_ok)} |",
        f"| … `GET /health` meanwhile, p50 / max of {held['probes']} | | "
        f"| {ms(held['health_p50_ms'])} / {ms(held['health_max_ms'])} "
        f"| max < {TARGET_HEALTH_MS:g} ms | {verdict(health_ok)} |",
        f"| replay drain, {replay['requests']:,} queued requests | | "
        f"| {rps(replay['drain_rps'])} req/s ({replay['wall_seconds']:.1f} s from start call "
        f"to all completed: {rps(replay['wall_rps'])} req/s) "
        f"| ≥ {rps(TARGET_REPLAY_RPS)} req/s | {verdict(replay['drain_rps'] >= TARGET_REPLAY_RPS)} |",
        *wake.rows(results["wake"], ms, verdict),
    ]
    durations = "c=1: 5 s, c=16 and c=64: 10 s" if not quick else "QUICK RUN (short durations)"
    notes = [
        f"Measured with `make bench` on {results['machine']}, {results['date']} "
        f"(commit {results['commit']}); load generator, proxy, Redis and agents all share "
        f"those cores (1-minute load average {results['load_start']:.2f} when it started; "
        f"processes outside this run used {results['other_cpu']:.0%} of the CPU while it "
        "measured).",
        "",
        *rows,
        "",
        f"- HTTP rows: `wrk --latency` ({durations}; `-t1 -c1`, `-t2 -c16`, `-t2 -c64`) "
        "against a minimal asyncio upstream (`bench/upstream`): straight to the container's "
        "bridge IP, and through `/agent/<name>/` on two `agentainer-server` processes "
        "sharing one port. \"persist off\" is an agent deployed with `\"persist\": false` "
        "(no journal); \"persist on\" journals every request in Redis (AOF, fsync every "
        "second).",
        f"- The stack: {results['stack']} (the servers share one port with SO_REUSEPORT), "
        "default settings except `queue_limit` 5000 and `log_level` WARNING.",
        "- SSE rows: `agentainer/stream-agent`, 20 tokens 50 ms apart, a keep-alive raw-socket "
        "client timing each `data:` event from just before it writes the request; proxied "
        f"with persist on. The client needed {sse['direct']['connects']} connection(s) for "
        f"{sse['direct']['streams']} direct streams and {sse['proxy_on']['connects']} for "
        f"{sse['proxy_on']['streams']} proxied ones: "
        + ("the proxy closes the connection after each streamed response (waitress does "
           "so for any response without Content-Length), so each proxied stream includes "
           "a TCP connect." if sse['proxy_on']['connects'] > 1 else "all kept alive."),
        f"- Held streams: {held['requested']} concurrent streams (one token every "
        f"100 ms) through the proxy, opened {OPEN_CONCURRENCY} at a time (the stream agent's "
        "`http.server` listens with a backlog of 5); `/health` (fresh connection each probe) answered in "
        f"{ms(held['baseline_p50_ms'])} p50 / {ms(held['baseline_max_ms'])} max with no "
        "streams open.",
        f"- Replay: {replay['requests']:,} requests queued through the proxy while the "
        f"agent was created but not started ({rps(replay['queue_rps'])} req/s to queue, "
        "16 client threads, every one 202), then the agent started; the drain rate is "
        "first to last delivery from the journal's timestamps (one drain job per agent, so "
        "one worker delivers them in order).",
        f"- Wake rows: `agentainer/echo-agent` deployed with `idle_timeout` "
        f"{wake.IDLE_TIMEOUT} and `idle_action` pause, then stop; each run waits until the "
        "monitor has paused (stopped) it, then times one proxied request sent with "
        "`Prefer: wait=10` on a fresh connection: the first byte, and the answer (the first "
        "byte when the server holds the request; else it answers 202 at once and the "
        "answer is the journal's completion time of the replayed request).",
        redis_note(results.get("redis")),
    ]
    return "\n".join(notes)


def redis_note(stats: dict | None) -> str:
    if not stats:
        return ""
    busiest = ", ".join(f"`{name.removeprefix('cmdstat_').upper()}` {v['cpu_s']:.1f} s "
                        f"({v['calls']:,} calls)" for name, v in
                        list(stats["busiest"].items())[:3])
    return (f"- Redis over the whole run: {stats['used_cpu_s']:.1f} s of CPU, "
            f"{stats['keys']:,} keys at the end; busiest commands: {busiest}.")


# --------------------------------------------------------------------------- main


def build_upstream(client) -> None:
    try:
        client.images.get(BASE_IMAGE)
    except Exception:  # noqa: BLE001
        raise SystemExit(f"{BASE_IMAGE} is missing; run `make images` first") from None
    log(f"building {UPSTREAM_IMAGE} from bench/upstream")
    client.images.build(path=str(HERE / "upstream"), tag=UPSTREAM_IMAGE, rm=True,
                        forcerm=True, pull=False)


def run(args: argparse.Namespace) -> dict:
    import docker

    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (make bench installs it: apt-get install wrk)")
    client = docker.from_env()
    client.ping()
    build_upstream(client)
    try:
        client.images.get(STREAM_IMAGE)
    except docker.errors.ImageNotFound:
        raise SystemExit(f"{STREAM_IMAGE} is missing; run `make images` first") from None

    data_dir = Path(tempfile.mkdtemp(prefix="agentainer-bench-"))
    stack = Stack(data_dir, monitor=not args.no_monitor)
    ok = False
    try:
        log(f"starting the stack (data dir {data_dir}, prefix {stack.prefix})")
        stack.start()
        api = Api(stack.url, stack.token)
        net = stack.networks[0]
        name = lambda what: f"{stack.prefix}-{what}"  # noqa: E731

        on = api.deploy(name("on"), UPSTREAM_IMAGE, start=True)
        off = api.deploy(name("off"), UPSTREAM_IMAGE, start=True, persist=False)
        stream = api.deploy(name("sse"), STREAM_IMAGE, start=True)
        replay_agent = api.deploy(name("replay"), UPSTREAM_IMAGE)
        direct_ip = container_ip(client, on["id"], net)
        stream_ip = container_ip(client, stream["id"], net)
        for url in (f"http://{direct_ip}:8000/", f"http://{stream_ip}:8000/health",
                    f"{stack.url}/agent/{on['name']}/", f"{stack.url}/agent/{off['name']}/",
                    f"{stack.url}/agent/{stream['name']}/health"):
            wait_http(url)

        names = [Path(p.args[1]).name if "python" in Path(p.args[0]).name else
                 Path(p.args[0]).name for p in stack.processes]
        results: dict = {"load_start": os.getloadavg()[0], "stack": ", ".join(f"{names.count(n)} × {n}" for n in
                                            dict.fromkeys(names)),
                         "machine": machine(), "commit": git_commit(),
                         "date": datetime.date.today().isoformat()}
        meter = CpuMeter(stack, client)
        log("a. HTTP latency and throughput (wrk)")
        results["http"] = measure_http({
            "direct": f"http://{direct_ip}:8000/",
            "proxy_off": f"{stack.url}/agent/{off['name']}/",
            "proxy_on": f"{stack.url}/agent/{on['name']}/",
        }, args.quick)

        log("b. SSE first token and token gaps")
        results["sse"] = measure_sse({
            "direct": (stream_ip, 8000, "/v1/chat/completions"),
            "proxy_on": ("127.0.0.1", stack.port,
                         f"/agent/{stream['name']}/v1/chat/completions"),
        }, runs=5 if args.quick else 20, tokens=20, delay=0.05)
        log(f"SSE: {results['sse']}")

        log(f"c. {args.streams} SSE streams held open while probing /health")
        results["held"] = measure_held_streams(
            stack.port, f"/agent/{stream['name']}/v1/chat/completions", args.streams,
            probes=30, budget=60)
        log(f"held streams: {results['held']}")
        time.sleep(3)  # the abandoned streams unwind

        log(f"d. replay drain of {args.replay} queued requests")
        results["replay"] = measure_replay(api, replay_agent, args.replay, timeout=180)
        log(f"replay: {results['replay']}")

        log("e. wake from idle-paused and idle-stopped")
        results["wake"] = wake.measure_wake(stack.url, stack.token, api.deploy, name,
                                            runs=5 if args.quick else wake.RUNS)
        log(f"wake: {results['wake']}")
        results["redis"] = redis_stats(stack.redis_url)
        log(f"redis: {results['redis']}")
        results["other_cpu"] = meter.other_share()
        log(f"CPU used by processes other than this run's: {results['other_cpu']:.1%}")
        ok = True
        return results
    finally:
        log("cleaning up")
        agent_ids = stack.agent_ids() if stack.redis_port else set()
        try:
            clean_docker(client, stack, agent_ids)
        finally:
            stack.stop_processes()
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
    parser.add_argument("--quick", action="store_true", help="short runs (not for publishing)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the stack's logs")
    parser.add_argument("--no-monitor", action="store_true",
                        help="do not run agentainer-monitor beside the servers and workers")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--replay", type=int, default=2000)
    args = parser.parse_args(argv)
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
