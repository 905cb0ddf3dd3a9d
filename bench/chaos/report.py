"""The chaos report: the figures as a markdown table, each target's verdict, per-kill lines."""

from collections.abc import Mapping
from dataclasses import dataclass

from bench.chaos.killer import TARGETS, kind
from bench.chaos.tally import Figures, Recovery, percentile

RECOVERY_TARGET = 10.0  # seconds, kill -> the next completed delivery, for every kill
KIND_LABELS = {"agent": "agent (`docker kill`)", "server": "server-0/1 (`kill -9`)",
               "worker": "worker-0/1 (`kill -9`)", "monitor": "monitor (`kill -9`)",
               "redis": "redis (`supervisorctl restart`)"}


@dataclass(frozen=True)
class Verdict:
    """One target: its name, what it asks and whether the run met it."""

    name: str
    wanted: str
    met: bool


def verdicts(figures: Figures) -> list[Verdict]:
    """Judge the run against the targets."""
    recoveries = [r.seconds for r in figures.recoveries]
    return [
        Verdict("lost", "0", not figures.lost),
        Verdict("delivered twice because of a keyed retry", "0", not figures.twice_keyed),
        Verdict("redelivered after a crash", "≤ in flight at the kills, each one of them",
                figures.redelivered <= figures.in_flight_at_kills
                and not figures.unexplained_redeliveries),
        Verdict("refused", "0", figures.refusals == 0),
        Verdict("recovery", f"max ≤ {RECOVERY_TARGET:g} s", _within(recoveries)
                and not figures.kills_missed),
        Verdict("caught requests finished", f"max ≤ {RECOVERY_TARGET:g} s",
                _within([r.settled for r in figures.recoveries])),
    ]


def _within(values: list[float | None]) -> bool:
    return all(v is not None and v <= RECOVERY_TARGET for v in values)


def _mark(met: bool) -> str:
    return "**PASS**" if met else "**MISS**"


def _seconds(values: list[float | None]) -> str:
    if not values:
        return "no kill"
    done = [v for v in values if v is not None]
    never = len(values) - len(done)
    text = (f"max {max(done):.1f} s, p95 {percentile(done, 0.95):.1f} s" if done else "")
    if never:
        text += f"{', ' if text else ''}{never} never"
    return f"{text} (n={len(values)})"


def _breakdown(counts: Mapping[str, int], order: tuple[str, ...]) -> str:
    return ", ".join(f"{name} {counts[name]:,}" for name in order if counts.get(name))


def render(figures: Figures, context: Mapping[str, str]) -> str:
    """Return the markdown block: a sentence on the run, the table, the notes.

    ``context`` holds ``command``, ``when`` (date, commit, machine), ``plan`` (keyed and
    streamed counts), ``settings`` and ``retry_for``.
    """
    judged = {v.name: v for v in verdicts(figures)}

    def row(label: str, value: str, name: str = "") -> str:
        verdict = judged.get(name)
        return (f"| {label} | {value} | {verdict.wanted if verdict else ''} "
                f"| {_mark(verdict.met) if verdict else ''} |")

    by_kind: dict[str, list[Recovery]] = {}
    for recovery in figures.recoveries:
        by_kind.setdefault(recovery.kind, []).append(recovery)
    unacked = figures.sent - figures.acknowledged
    rows = [
        "| figure | value | target | |",
        "|---|---|---|---|",
        row("requests sent", f"{figures.sent:,} ({context['plan']})"),
        row("acknowledged", f"{figures.acknowledged:,} ("
            + _breakdown(figures.how, ("answered", "queued", "cut", "requeued", "followed"))
            + ")" + (f"; {figures.idempotent_replays:,} answered from their key's record"
                     if figures.idempotent_replays else "")),
        row("not acknowledged", f"{unacked:,}"
            + (f" ({_breakdown(figures.how, ('broken', 'refused', 'rejected'))})"
               if unacked else "")),
        row("completed / failed / cancelled", f"{figures.completed:,} / {figures.failed:,} "
            f"/ {figures.cancelled:,}"),
        row("**lost**", f"{len(figures.lost):,}", "lost"),
        row("deliveries in the agent's log", f"{figures.deliveries:,}"
            + (f" ({figures.unreadable_lines:,} unreadable lines)"
               if figures.unreadable_lines else "")),
        row("journaled, not acknowledged", f"{len(figures.unacknowledged):,} "
            f"({figures.unacknowledged_unfinished:,} never finished)"),
        row("redelivered after a crash", f"{figures.redelivered:,} request IDs "
            f"({figures.extra_deliveries:,} extra deliveries) of {figures.in_flight_at_kills:,} "
            "in flight at the kills"
            + (f"; {len(figures.unexplained_redeliveries):,} not in flight at any kill"
               if figures.unexplained_redeliveries else ""),
            "redelivered after a crash"),
        row("delivered twice because of a keyed retry", f"{len(figures.twice_keyed):,}",
            "delivered twice because of a keyed retry"),
        row("unkeyed requests delivered under two request IDs",
            f"{len(figures.twice_unkeyed):,}"),
        row("refused (5xx)", f"{figures.refusals:,} refusals"
            + (f" ({', '.join(f'`{k}` × {v}' for k, v in sorted(figures.refused_with.items()))})"
               if figures.refused_with else "")
            + f" to {figures.refused_requests:,} requests; {figures.never_accepted:,} never "
            "accepted", "refused"),
        *(row(f"recovery after a kill of the {KIND_LABELS[name]}",
              _seconds([r.seconds for r in by_kind.get(name, [])]))
          for name in dict.fromkeys(kind(t) for t in TARGETS)),
        row("recovery, every kill", _seconds([r.seconds for r in figures.recoveries])
            + (f"; {len(figures.kills_missed)} kill(s) not carried out"
               if figures.kills_missed else ""), "recovery"),
        *(row(f"… requests it caught finished, {name}",
              _seconds([r.settled for r in by_kind.get(name, [])]))
          for name in dict.fromkeys(kind(t) for t in TARGETS)),
        row("… requests caught by a kill finished, every kill",
            _seconds([r.settled for r in figures.recoveries]), "caught requests finished"),
    ]
    notes = [
        f"Measured with `{context['command']}` on {context['when']}.",
        "",
        *rows,
        "",
        f"- The stack: `supervisord.conf` with {context['settings']}.",
        "- *Acknowledged*: the proxy answered with a request ID it journaled — `200`, `202`, "
        "a `200` whose body broke off, a `502`/`504` carrying `data.request_id` (requeued), or "
        "a `409` naming the first request of a retried key; each is then followed in the "
        "journal. *Lost*: acknowledged, and no journal record, not finished after the wait, "
        "or completed without the agent ever receiving it.",
        "- *Redelivered*: a request ID in the agent's delivery log more than once. *In flight "
        "at the kills*: request IDs delivered before a kill was done and not finished when it "
        "began (the bound on redeliveries).",
        "- *Refused*: `503`s and other 5xx without a journaled request; the client retries "
        f"them with a backoff for up to {context['retry_for']} s (keyed or not), and retries a "
        "keyed request on any error with the same key. An unkeyed request whose connection "
        "broke before an answer is not retried (*broken*).",
        "- *Recovery*: from a kill to the completion of the first request the agent received "
        "after the kill was done. *Requests it caught*: those the journal had accepted and not "
        "finished when the kill began (each counted for the first kill that caught it); the "
        "figure runs from the kill until the last of them finished (a lease running out, a "
        "replay).",
    ]
    return "\n".join(notes)


def render_kills(figures: Figures, started: float) -> str:
    """One line per kill, for the terminal: when, what, what it hit, how long it took."""
    lines = []
    for r in figures.recoveries:
        recovery = f"{r.seconds:.2f} s" if r.seconds is not None else "never"
        settled = f"{r.settled:.2f} s" if r.settled is not None else "never"
        lines.append(f"  t+{r.at - started:6.1f} s  {r.target:<16} in flight {r.in_flight:3}"
                     f"  recovery {recovery:>8}  caught {r.caught:3}, finished {settled:>8}")
    lines += [f"  {missed}" for missed in figures.kills_missed]
    return "\n".join(lines)


def render_verdicts(figures: Figures) -> str:
    """The targets, one line each: ``PASS lost (0)``."""
    return "\n".join(f"{'PASS' if v.met else 'MISS'}  {v.name} ({v.wanted})"
                     for v in verdicts(figures))


def render_details(figures: Figures, *, most: int = 10) -> str:
    """Name the requests behind every non-zero count that a target is about."""
    lines = []
    for title, items in (("lost", figures.lost),
                         ("delivered twice because of a keyed retry (keys)", figures.twice_keyed),
                         ("journaled, not acknowledged", figures.unacknowledged),
                         ("redelivered, not in flight at any kill",
                          figures.unexplained_redeliveries),
                         ("unkeyed, delivered under two request IDs (seqs)",
                          [str(seq) for seq in figures.twice_unkeyed])):
        if items:
            shown = ", ".join(str(item) for item in items[:most])
            more = f" (+{len(items) - most} more)" if len(items) > most else ""
            lines.append(f"  {title}: {shown}{more}")
    return "\n".join(lines) or "  none"
