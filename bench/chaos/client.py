"""The chaos client: sends numbered requests through the proxy, retrying as a real client would.

Each request carries ``X-Client-Seq: <n>``; half of them (chosen by the seed) also carry an
``Idempotency-Key``, and some ask for a streamed answer. What the client makes of each
answer:

- ``200`` read to the end: *answered*; ``202``: *queued* (its ``request_id`` is followed in
  the journal); both are acknowledged.
- ``200`` whose body broke off (a cut stream, a reset): *cut*. The reply's request ID was
  seen, so it is acknowledged and followed; a keyed request is also retried with its key.
- ``502``/``504`` carrying ``data.request_id``: the proxy journaled the request and requeued
  it, so it is acknowledged (*requeued*) and followed; a keyed request is also retried.
- ``409`` ``idempotency_in_progress`` / ``idempotency_response_unavailable`` on a keyed retry:
  the reply names the first request (``X-Agentainer-Request-Id``), which is followed.
- any other 5xx (``503`` ``proxy_busy``, ``queue_full``, ``unavailable``...): a *refusal*,
  counted, then retried after a backoff, keyed or not (the proxy journaled nothing).
- no answer at all (refused connection, reset, timeout before the status line): a keyed
  request is retried with its key; an unkeyed one is *broken* and not retried, because a
  client without a key cannot know whether it arrived.
- any other 4xx: *rejected*, not retried.

Retries stop after ``retry_for`` seconds; a request still refused then is *refused*.
"""

import json
import random
import threading
import time
from dataclasses import dataclass, field

import requests

REQUEST_ID = "X-Agentainer-Request-Id"
IDEMPOTENT_REPLAY = "X-Agentainer-Idempotent-Replay"
FOLLOWED_CONFLICTS = frozenset({"idempotency_in_progress", "idempotency_response_unavailable"})


@dataclass
class Outcome:
    """What the client knows about one request once it stopped sending it."""

    seq: int
    key: str                    # the Idempotency-Key, "" for none
    stream: bool
    how: str = "unsent"         # answered queued cut requeued followed refused broken rejected
    request_id: str = ""        # the journal's ID the client follows ("" when it has none)
    answers: list[str] = field(default_factory=list)   # per attempt: "200", "503 queue_full"...
    refusals: list[str] = field(default_factory=list)  # the 5xx refusals among them
    idempotent_replay: bool = False  # answered from the journal's idempotency record

    @property
    def acknowledged(self) -> bool:
        """The proxy answered with a request ID it journaled (2xx, or one it requeued)."""
        return bool(self.request_id)


@dataclass(frozen=True)
class Plan:
    """Which requests carry a key or stream, and how they are paced (all from the seed)."""

    requests: int
    keyed: frozenset[int]
    streamed: frozenset[int]
    rate: float                 # requests started per second

    @classmethod
    def make(cls, count: int, *, rng: random.Random, stream_share: float,
             rate: float) -> "Plan":
        """Key exactly half of ``count`` requests and stream ``stream_share`` of them."""
        seqs = list(range(count))
        keyed = frozenset(rng.sample(seqs, count // 2))
        streamed = frozenset(rng.sample(seqs, round(count * stream_share)))
        return cls(count, keyed, streamed, rate)

    @property
    def seconds(self) -> float:
        """How long sending takes when nothing holds the client up."""
        return self.requests / self.rate


class Client:
    """Sends the plan's requests from ``threads`` threads, paced at the plan's rate."""

    def __init__(self, url: str, plan: Plan, *, run_id: str, threads: int = 8,
                 retry_for: float = 30.0, read_timeout: float = 30.0) -> None:
        self._url = url
        self._plan = plan
        self._run_id = run_id
        self._threads = threads
        self._retry_for = retry_for
        self._read_timeout = read_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._next = 0
        self._outstanding = 0
        self.outcomes: list[Outcome] = [
            Outcome(seq, f"chaos-{run_id}-{seq}" if seq in plan.keyed else "",
                    seq in plan.streamed) for seq in range(plan.requests)]

    @property
    def outstanding(self) -> int:
        """Requests being sent right now (sent, no final answer yet)."""
        return self._outstanding

    def run(self) -> None:
        """Send every request; return when each has an outcome."""
        started = time.monotonic()
        workers = [threading.Thread(target=self._work, args=(started,), daemon=True,
                                    name=f"chaos-client-{n}") for n in range(self._threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    def _work(self, started: float) -> None:
        self._local.session = requests.Session()
        while True:
            with self._lock:
                seq, self._next = self._next, self._next + 1
            if seq >= self._plan.requests:
                return
            delay = started + seq / self._plan.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with self._lock:
                self._outstanding += 1
            try:
                self._send(self.outcomes[seq])
            finally:
                with self._lock:
                    self._outstanding -= 1

    def _send(self, outcome: Outcome) -> None:
        body = json.dumps({
            "messages": [{"role": "user", "content": f"chaos request {outcome.seq}"}],
            "stream": outcome.stream, "tokens": 5,
            "token_delay": 0.08 if outcome.stream else 0.02}).encode()
        headers = {"Content-Type": "application/json", "X-Client-Seq": str(outcome.seq)}
        if outcome.key:
            headers["Idempotency-Key"] = outcome.key
        deadline = time.monotonic() + self._retry_for
        backoff = 0.2
        while True:
            retry = self._attempt(outcome, body, headers)
            if not retry or time.monotonic() + backoff > deadline:
                break
            time.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
        if outcome.how == "unsent":
            outcome.how = "broken"

    def _attempt(self, outcome: Outcome, body: bytes, headers: dict[str, str]) -> bool:
        """Send once and note what came back; return whether to send again."""
        session: requests.Session = self._local.session
        try:
            reply = session.post(self._url, data=body, headers=headers, stream=True,
                                 timeout=(5, self._read_timeout))
        except requests.RequestException as ex:
            outcome.answers.append(type(ex).__name__)
            return bool(outcome.key)
        with reply:
            status, request_id = reply.status_code, reply.headers.get(REQUEST_ID, "")
            try:
                content = reply.content
                whole = not outcome.stream or b"data: [DONE]" in content
            except requests.RequestException as ex:
                content, whole = type(ex).__name__.encode(), False
        answer = f"{status} {_error(content) or ('' if whole else 'cut')}".strip()
        outcome.answers.append(answer)
        if status == 200:
            outcome.request_id = request_id
            outcome.idempotent_replay = reply.headers.get(IDEMPOTENT_REPLAY) == "true"
            outcome.how = "answered" if whole else "cut"
            return not whole and bool(outcome.key)
        if status == 202:
            outcome.request_id = _data(content).get("request_id") or request_id
            outcome.how = "queued"
            return False
        if status in (502, 504) and _data(content).get("request_id"):
            outcome.request_id = _data(content)["request_id"]
            outcome.how = "requeued"
            return bool(outcome.key)
        if status == 409 and _error(content) in FOLLOWED_CONFLICTS:
            outcome.request_id = request_id
            outcome.how = "followed"
            return False
        if status >= 500:
            outcome.refusals.append(answer)
            if not outcome.request_id:
                outcome.how = "refused"
            return True
        if not outcome.request_id:
            outcome.how = "rejected"
        return False


def _envelope(content: bytes) -> dict:
    try:
        parsed = json.loads(content)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _data(content: bytes) -> dict:
    data = _envelope(content).get("data")
    return data if isinstance(data, dict) else {}


def _error(content: bytes) -> str:
    return str(_envelope(content).get("error") or "")
