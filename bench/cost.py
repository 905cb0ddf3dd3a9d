"""What a measured run cost: process CPU and memory from /proc, Redis's from INFO and MONITOR.

Figures per request are steadier than req/s on a shared machine: a neighbour that takes a
core halves the req/s but hardly moves the CPU each request needs.

- :class:`Meter` samples a set of processes' CPU (utime + stime of every thread, from
  ``/proc/<pid>/stat``) and, given a Redis, its CPU (``INFO cpu``) and the commands it
  executed (``total_commands_processed`` and ``INFO commandstats``). Both count the commands
  Lua scripts call (an ``HSET`` inside ``EVALSHA`` is an ``HSET``), so
- :class:`CommandWatch` reads ``MONITOR``, which marks those (``[0 lua]``): the commands the
  clients sent are the others.
- :func:`measure` runs one load between two samples, after an idle window whose rate (the
  monitor's, the workers' and the janitor's background work) it subtracts.
- :class:`CpuShare`: the share of the machine's CPU processes outside the run used.
"""

import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB, 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (nginx's master and its workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(child) for child in task.read_text().split()]
            except OSError:
                continue
    return found


class CommandWatch:
    """Counts the commands a Redis executes as ``MONITOR`` shows them, by name and source.

    A line reads ``+<time> [<db> <client address>] "<command>" ...``; a script's calls have
    ``lua`` for the address. Keys of :meth:`counts`: ``("client", name)``, ``("lua", name)``.
    """

    LINE = re.compile(rb'\+[\d.]+ \[\d+ (\S+)\] "([^"]*)"')

    def __init__(self, host: str, port: int) -> None:
        self._sock = socket.create_connection((host, port), timeout=10)
        self._sock.sendall(b"MONITOR\r\n")
        self._counts: Counter = Counter()
        self._lock = threading.Lock()
        self._buffer = b""
        ok = self._sock.recv(5)
        if ok != b"+OK\r\n":
            raise RuntimeError(f"MONITOR answered {ok!r}")
        self._sock.settimeout(None)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = self._sock.recv(1 << 20)
            except OSError:
                return
            if not chunk:
                return
            lines, _, self._buffer = (self._buffer + chunk).rpartition(b"\r\n")
            counted = Counter(("lua" if source == b"lua" else "client", name.decode().lower())
                              for source, name in self.LINE.findall(lines))
            with self._lock:
                self._counts.update(counted)

    def counts(self) -> Counter:
        with self._lock:
            return Counter(self._counts)

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(timeout=5)


@dataclass
class Sample:
    at: float
    cpu: float = 0.0
    redis_cpu: float = 0.0
    commands: int = 0
    calls: Counter = field(default_factory=Counter)
    watched: Counter = field(default_factory=Counter)


class Meter:
    """Samples the CPU of the processes ``pids()`` names and, with ``redis_url``, Redis."""

    def __init__(self, pids: Callable[[], Iterable[int]], redis_url: str | None = None,
                 watch: CommandWatch | None = None) -> None:
        self._pids = pids
        self.watch = watch
        self.redis = None
        if redis_url:
            import redis
            self.redis = redis.Redis.from_url(redis_url, socket_timeout=10)

    def sample(self) -> Sample:
        sample = Sample(time.monotonic(), sum(cpu_seconds(pid) for pid in self._pids()))
        if self.redis is not None:
            info = self.redis.info("all")
            sample.redis_cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
            sample.commands = int(info["total_commands_processed"])
            sample.calls = Counter({key.removeprefix("cmdstat_"): value["calls"]
                                    for key, value in info.items()
                                    if key.startswith("cmdstat_")})
        if self.watch is not None:
            sample.watched = self.watch.counts()
        return sample


def _per_request(counter: Counter, requests: int, top: int = 6) -> dict[str, float]:
    """The busiest entries of ``counter`` divided by ``requests``, rounded, zeros dropped."""
    per = {name: round(count / requests, 2) for name, count in counter.most_common()}
    return dict(list({k: v for k, v in per.items() if v > 0}.items())[:top])


def measure(meter: Meter, load: Callable[[], dict], idle: float) -> tuple[dict, dict]:
    """Run ``load`` (returns figures with ``requests``); return them and what it cost.

    The cost is per request: the change over the load minus what the idle window of
    ``idle`` seconds just before it changed in as long a time (the background).
    """
    first = meter.sample()
    time.sleep(idle)
    before = meter.sample()
    result = load()
    after = meter.sample()
    requests = max(1, result["requests"])
    scale = (after.at - before.at) / (before.at - first.at)

    def net(name: str) -> float:
        a, b, c = (getattr(s, name) for s in (first, before, after))
        return (c - b) - (b - a) * scale

    def net_counter(name: str) -> Counter:
        a, b, c = (getattr(s, name) for s in (first, before, after))
        return Counter({key: c[key] - b[key] - (b[key] - a[key]) * scale for key in c})

    cost = {"cpu_us": net("cpu") * 1e6 / requests,
            "background_cpu_us": (before.cpu - first.cpu) * scale * 1e6 / requests,
            "idle_seconds": round(before.at - first.at, 2),
            "load_seconds": round(after.at - before.at, 2)}
    if meter.redis is not None:
        background = (before.commands - first.commands) * scale
        cost.update(redis_cpu_us=net("redis_cpu") * 1e6 / requests,
                    redis_commands=net("commands") / requests,
                    redis_background_commands=background / requests,
                    redis_calls=_per_request(net_counter("calls"), requests))
    if meter.watch is not None:
        watched = net_counter("watched")
        sent = Counter({name: n for (source, name), n in watched.items() if source == "client"})
        called = Counter({name: n for (source, name), n in watched.items() if source == "lua"})
        cost.update(sent=sum(sent.values()) / requests, sent_calls=_per_request(sent, requests),
                    scripted=sum(called.values()) / requests,
                    scripted_calls=_per_request(called, requests))
    return result, cost


class CpuShare:
    """How much of the machine's CPU went to processes other than this run's.

    Ours: this script and its waited-for children (wrk, the stream holder), the processes
    ``pids()`` names (the stacks', nginx's), and the processes in the containers on the
    networks ``networks()`` names. Everything else (another user's tests, dockerd, kernel
    threads) is "other"; the figure says how undisturbed the run was. :meth:`pause` before
    a stack goes (its containers' CPU would be lost), :meth:`resume` after.
    """

    def __init__(self, pids: Callable[[], Iterable[int]],
                 networks: Callable[[], Iterable[str]], client) -> None:
        self._pids = pids
        self._networks = networks
        self._client = client
        self._totals = [0.0, 0.0, 0.0]  # seconds, busy, ours
        self._start: tuple[float, float, float] | None = self._sample()

    def _containers(self) -> set[str]:
        try:
            return {c.id for net in self._networks()
                    for c in self._client.containers.list(filters={"network": net})}
        except Exception:  # noqa: BLE001 - the figure is best effort
            return set()

    def _sample(self) -> tuple[float, float, float]:
        import resource
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        busy = sum(int(fields[i]) for i in (0, 1, 2, 5, 6, 7)) / HZ
        ours = sum(r.ru_utime + r.ru_stime for r in (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN)))
        ours += sum(cpu_seconds(pid) for pid in self._pids())
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
                    ours += cpu_seconds(int(entry.name))
        return time.monotonic(), busy, ours

    def pause(self) -> None:
        if self._start is not None:
            end = self._sample()
            for index in range(3):
                self._totals[index] += end[index] - self._start[index]
            self._start = None

    def resume(self) -> None:
        if self._start is None:
            self._start = self._sample()

    def other_share(self) -> float:
        """The share of all CPUs (0..1) used by others while the meter ran."""
        self.pause()
        seconds, busy, ours = self._totals
        capacity = seconds * (os.cpu_count() or 1)
        return max(0.0, (busy - ours) / capacity) if capacity else 0.0
