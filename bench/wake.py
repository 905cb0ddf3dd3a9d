"""Wake from idle: how long a request to an agent the idle rule paused or stopped waits
for its answer (part of ``make bench``; alone: ``.venv/bin/python -m bench.wake``).

The echo agent is deployed with a short ``idle_timeout``; each run waits until the monitor
has paused (or stopped) it, then sends one request with ``Prefer: wait=10`` and times

- first byte: the response's status line and headers. A server that holds the request
  (``Prefer: wait``) answers with the agent's own response; one that does not answers
  ``202`` at once, the request queued;
- answer: until the agent's answer is recorded: the first byte when held, else the
  record's completion time (``updated_at``, the journal's clock in ms on this host).

Targets: idle-paused -> answer <= 100 ms, idle-stopped -> answer <= 2 s.
"""

import http.client
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

ECHO_IMAGE = "agentainer/echo-agent:latest"
IDLE_TIMEOUT = "1s"
RUNS = 20
TARGETS_MS = {"pause": 100.0, "stop": 2000.0}
STATES = {"pause": "paused", "stop": "stopped"}


def _call(url: str, token: str, method: str, path: str, body: bytes | None = None,
          headers: dict[str, str] | None = None, timeout: float = 30
          ) -> tuple[int, dict[str, str], bytes, float]:
    """One request on a fresh connection; returns status, headers, body and the
    ``time.time()`` the status line arrived (the first byte)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers={
            "Authorization": f"Bearer {token}", **(headers or {})})
        response = connection.getresponse()
        first = time.time()
        return response.status, dict(response.getheaders()), response.read(), first
    finally:
        connection.close()


def _data(url: str, token: str, path: str) -> dict:
    status, _, body, _ = _call(url, token, "GET", path)
    if status != 200:
        raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
    return json.loads(body)["data"]


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise RuntimeError(f"wake bench: timed out waiting for {what}")


def measure_one(url: str, token: str, agent: dict, action: str) -> dict[str, float | bool]:
    """Wait until the agent is idle-paused or idle-stopped, then time one request."""
    agent_id = agent["id"]
    state = STATES[action]

    def idle() -> bool:
        view = _data(url, token, f"/agents/{agent_id}")
        return view["status"] == state and view["idle"] is True

    _wait(idle, 30, f"{agent['name']} to be {state} for idleness")
    sent = time.time()
    status, headers, body, first = _call(url, token, "POST", f"/agent/{agent['name']}/wake",
                                         body=b"{}", headers={"Prefer": "wait=10",
                                                              "Content-Type": "application/json"})
    if status == 202:  # NOTE: not held: the answer is the record's completion
        request_id = headers["X-Agentainer-Request-Id"]
        path = f"/agents/{agent_id}/requests/{request_id}"
        record: dict = {}

        def completed() -> bool:
            record.update(_data(url, token, path))
            return record["status"] == "completed"

        _wait(completed, 30, f"request {request_id} to complete")
        answered = record["updated_at"] / 1000
    elif status == 200:
        answered = first
    else:
        raise RuntimeError(f"wake bench: {status} {body[:300]!r}")
    return {"first_byte_ms": (first - sent) * 1000, "answer_ms": (answered - sent) * 1000,
            "held": status == 200}


def measure_wake(url: str, token: str, deploy: Callable[..., dict], name: Callable[[str], str],
                 runs: int = RUNS) -> dict:
    """Run ``runs`` wakes from idle-paused, then from idle-stopped, on one echo agent each."""
    results = {}
    for action in ("pause", "stop"):
        agent = deploy(name(f"idle-{action}"), ECHO_IMAGE, start=True,
                       idle_timeout=IDLE_TIMEOUT, idle_action=action)
        samples = [measure_one(url, token, agent, action) for _ in range(runs)]
        first = [s["first_byte_ms"] for s in samples]
        answer = [s["answer_ms"] for s in samples]
        results[action] = {
            "runs": runs, "held": all(s["held"] for s in samples),
            "first_byte_median_ms": statistics.median(first), "first_byte_max_ms": max(first),
            "answer_median_ms": statistics.median(answer), "answer_max_ms": max(answer),
            "target_ms": TARGETS_MS[action]}
    return results


def rows(wake: dict, ms: Callable[[float], str], check: Callable[..., str]) -> list[str]:
    """The README table's rows (bench/run.py's columns: the figure under persist on).

    ``check(value, target, at_least=..., unit=...)`` is bench/run.py's verdict.
    """
    lines = []
    for action, label in (("pause", "idle-paused"), ("stop", "idle-stopped")):
        w = wake[action]
        first = (f"first byte {ms(w['first_byte_median_ms'])} / {ms(w['first_byte_max_ms'])}"
                 + ("" if w["held"] else " (202, not held)"))
        answer = f"answer {ms(w['answer_median_ms'])} / {ms(w['answer_max_ms'])}"
        met = check(w["answer_max_ms"], w["target_ms"], at_least=False, unit=ms)
        lines.append(f"| wake from {label}, median / max of {w['runs']} | | | | {first}; "
                     f"{answer} | answer ≤ {ms(w['target_ms'])} | {met} |")
    return lines


def main() -> int:
    """Measure the wakes alone, on a stack of bench/run.py's (never written to README)."""
    import docker

    from bench import run
    from bench.stack import Api, Stack

    client = docker.from_env()
    stack = Stack(Path(tempfile.mkdtemp(prefix="agentainer-bench-wake-")))
    try:
        stack.start()
        api = Api(stack.url, stack.token)
        wake = measure_wake(stack.url, stack.token, api.deploy,
                            lambda what: f"{stack.prefix}-{what}")
        print(json.dumps(wake, indent=2))
        print("\n".join(rows(wake, run.ms, run.check)))
    finally:
        try:
            stack.tear_down(client)
        finally:
            client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
