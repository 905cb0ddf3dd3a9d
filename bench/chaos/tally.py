"""The chaos tally: what the client was told, what the agent received, what the journal says.

Three sources are joined by request ID (and by the client's sequence number and key):
the client's :class:`~bench.chaos.client.Outcome` of each request, the agent's delivery log
(one line per request it received) and the journal's records (status and the time of the
last change, which for a finished request is when it finished). All times are Unix times
of this host (the agents' containers share its clock).
"""

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bench.chaos.client import Outcome
from bench.chaos.killer import Kill

TERMINAL = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class Delivery:
    """One line of the agent's delivery log."""

    time: float
    request_id: str
    replay: bool
    key: str
    seq: int | None


def read_deliveries(path: Path) -> tuple[list[Delivery], int]:
    """Return the deliveries in ``path`` and how many of its lines could not be read."""
    deliveries, unreadable = [], 0
    text = path.read_text() if path.exists() else ""
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            seq = entry.get("seq")
            deliveries.append(Delivery(float(entry["time"]), entry.get("request_id") or "",
                                       bool(entry.get("replay")), entry.get("idempotency_key")
                                       or "", int(seq) if seq is not None else None))
        except (ValueError, KeyError, TypeError):
            unreadable += 1
    return deliveries, unreadable


@dataclass
class Recovery:
    """How long the agent took to serve again after one kill, and to finish what it caught."""

    target: str
    kind: str
    at: float
    in_flight: int              # requests delivered and not yet finished when it hit
    caught: int                 # requests accepted and unfinished when it hit (first kill)
    seconds: float | None       # kill -> the next delivery's completion (None: none)
    settled: float | None       # kill -> the last request it caught finished (None: never)


@dataclass
class Figures:
    """Every figure the report prints."""

    sent: int = 0
    how: dict[str, int] = field(default_factory=dict)
    acknowledged: int = 0
    idempotent_replays: int = 0                              # answered from the key's record
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    lost: list[str] = field(default_factory=list)           # "seq N: why"
    unacknowledged: list[str] = field(default_factory=list)  # "rid status (seq N: how)"
    unacknowledged_unfinished: int = 0
    deliveries: int = 0
    unreadable_lines: int = 0
    redelivered: int = 0                                     # request IDs delivered 2+ times
    extra_deliveries: int = 0
    in_flight_at_kills: int = 0                              # the bound on redelivered
    unexplained_redeliveries: list[str] = field(default_factory=list)
    twice_keyed: list[str] = field(default_factory=list)     # keys delivered under 2+ IDs
    twice_unkeyed: list[int] = field(default_factory=list)   # seqs delivered under 2+ IDs
    refusals: int = 0                                        # 5xx refusals answered
    refused_with: dict[str, int] = field(default_factory=dict)  # "503 unavailable" -> count
    refused_requests: int = 0                                # requests refused at least once
    never_accepted: int = 0
    recoveries: list[Recovery] = field(default_factory=list)
    kills_missed: list[str] = field(default_factory=list)


def tally(outcomes: list[Outcome], deliveries: list[Delivery], records: dict[str, dict],
          kills: list[Kill], *, unreadable: int = 0) -> Figures:
    """Join the three sources into the figures (see the module's docstring)."""
    figures = Figures(sent=len(outcomes), deliveries=len(deliveries),
                      unreadable_lines=unreadable)
    delivered: dict[str, list[float]] = defaultdict(list)
    for delivery in deliveries:
        delivered[delivery.request_id].append(delivery.time)
    finished = {rid: record["updated_at"] / 1000 for rid, record in records.items()
                if record.get("status") in TERMINAL}
    _client_side(figures, outcomes, records, delivered)
    _unacknowledged(figures, outcomes, records, deliveries)
    in_flight = _kills(figures, kills, records, delivered, finished)
    redelivered = {rid for rid, times in delivered.items() if len(times) > 1}
    figures.redelivered = len(redelivered)
    figures.extra_deliveries = sum(len(delivered[rid]) - 1 for rid in redelivered)
    figures.in_flight_at_kills = len(in_flight)
    figures.unexplained_redeliveries = sorted(redelivered - in_flight)
    _duplicates(figures, deliveries)
    return figures


def _client_side(figures: Figures, outcomes: list[Outcome], records: dict[str, dict],
                 delivered: dict[str, list[float]]) -> None:
    for outcome in outcomes:
        figures.how[outcome.how] = figures.how.get(outcome.how, 0) + 1
        figures.refusals += len(outcome.refusals)
        for answer in outcome.refusals:
            figures.refused_with[answer] = figures.refused_with.get(answer, 0) + 1
        figures.refused_requests += bool(outcome.refusals)
        figures.never_accepted += outcome.how == "refused"
        if not outcome.acknowledged:
            continue
        figures.acknowledged += 1
        figures.idempotent_replays += outcome.idempotent_replay
        status = records.get(outcome.request_id, {}).get("status")
        figures.completed += status == "completed"
        figures.failed += status == "failed"
        figures.cancelled += status == "cancelled"
        if status is None:
            figures.lost.append(f"seq {outcome.seq}: no journal record {outcome.request_id}")
        elif status not in TERMINAL:
            figures.lost.append(f"seq {outcome.seq}: {outcome.request_id} still {status}")
        elif status == "completed" and outcome.request_id not in delivered:
            figures.lost.append(f"seq {outcome.seq}: {outcome.request_id} completed, "
                                "never delivered")


def _unacknowledged(figures: Figures, outcomes: list[Outcome], records: dict[str, dict],
                    deliveries: Iterable[Delivery]) -> None:
    """Name the journal's records that no client answer carried (the seq from the log)."""
    known = {outcome.request_id for outcome in outcomes if outcome.acknowledged}
    seqs = {d.request_id: d.seq for d in deliveries if d.seq is not None}
    for rid, record in sorted(records.items()):
        if rid in known:
            continue
        status = record.get("status")
        figures.unacknowledged_unfinished += status not in TERMINAL
        seq = seqs.get(rid)
        if seq is None or not 0 <= seq < len(outcomes):
            seen = "never delivered"
        else:
            answers = " / ".join(outcomes[seq].answers)
            seen = f"seq {seq}: {outcomes[seq].how}" + (f", {answers}" if answers else "")
        figures.unacknowledged.append(f"{rid} {status} ({seen})")


def _kills(figures: Figures, kills: list[Kill], records: dict[str, dict],
           delivered: dict[str, list[float]], finished: dict[str, float]) -> set[str]:
    """Fill the recoveries; return every request in flight at some kill."""
    completions = sorted((max(delivered[rid]), finished[rid]) for rid, record in
                         records.items() if record.get("status") == "completed"
                         and rid in delivered)
    done = [kill for kill in kills if kill.happened]
    figures.kills_missed = [f"{kill.target}: {kill.note or 'not carried out'}"
                            for kill in kills if not kill.happened]
    caught = _caught(done, records, finished)
    union: set[str] = set()
    for kill in done:
        hit = {rid for rid, times in delivered.items() if min(times) < kill.done
               and finished.get(rid, math.inf) > kill.at}
        union |= hit
        after = [end for last, end in completions if last >= kill.done]
        settled = max((finished.get(rid, math.inf) for rid in caught[id(kill)]),
                      default=kill.at) - kill.at
        figures.recoveries.append(Recovery(
            kill.target, kill.kind, kill.at, len(hit), len(caught[id(kill)]),
            min(after) - kill.at if after else None,
            settled if settled < math.inf else None))
    return union


def _caught(kills: list[Kill], records: dict[str, dict],
            finished: dict[str, float]) -> dict[int, list[str]]:
    """Give each request to the first kill that found it accepted and unfinished.

    NOTE: the first, so that a request held up by one kill (a lease running out) does not
    also count against every kill that follows while it waits.
    """
    caught: dict[int, list[str]] = {id(kill): [] for kill in kills}
    ordered = sorted(kills, key=lambda kill: kill.at)
    for rid, record in records.items():
        created, end = record["created_at"] / 1000, finished.get(rid, math.inf)
        first = next((kill for kill in ordered if created < kill.done and end > kill.at), None)
        if first is not None:
            caught[id(first)].append(rid)
    return caught


def _duplicates(figures: Figures, deliveries: Iterable[Delivery]) -> None:
    by_key: dict[str, set[str]] = defaultdict(set)
    by_seq: dict[int, set[str]] = defaultdict(set)
    for delivery in deliveries:
        if delivery.key:
            by_key[delivery.key].add(delivery.request_id)
        elif delivery.seq is not None:
            by_seq[delivery.seq].add(delivery.request_id)
    figures.twice_keyed = sorted(key for key, rids in by_key.items() if len(rids) > 1)
    figures.twice_unkeyed = sorted(seq for seq, rids in by_seq.items() if len(rids) > 1)


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (``share`` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]
