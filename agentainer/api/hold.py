"""Holding a queued proxied request's connection for the agent's answer (``Prefer``).

A request that must wait in its agent's queue (the agent is down, has a backlog, or is at
``max_concurrency``) is journaled as queued either way; what differs is the answer. Held,
the caller's connection stays open until the request is delivered (by replay) and gets the
agent's response as it streams; not held, or when the hold runs out first, it gets ``202``
and a ``Location`` to poll, and the request stays queued.

RFC 7240: ``Prefer: wait=N`` holds for up to N seconds, ``Prefer: respond-async`` asks for
the ``202`` at once; without either the agent's ``hold`` applies (the ``hold`` setting
unless the agent was deployed with its own). ``Preference-Applied`` names the preference
the answer honoured.
"""

import re
from dataclasses import dataclass

from agentainer.journal.journal import Admission
from agentainer.statuses import AgentStatus, Desired

# NOTE: a preference is a token, optionally "=value" (a token or a quoted string), then
# ";"-separated parameters, which neither preference here takes (RFC 7240 §2)
_PREFERENCE = re.compile(r'\s*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)\s*(?:=\s*("[^"]*"|[^;,\s]*))?'
                         r'[^,]*')
MAX_WAIT = 3600.0  # NOTE: a longer hold (Prefer: wait, an agent's hold) is held this long
RESPOND_ASYNC = "respond-async"
WAIT = "wait"


@dataclass(frozen=True)
class Preference:
    """What a request's ``Prefer`` header asks of a queued request."""

    wait: float | None = None   # seconds (``wait=N``), None when not asked
    respond_async: bool = False


def parse_prefer(header: str | None) -> Preference:
    """Read ``wait`` and ``respond-async`` from a ``Prefer`` header (several headers arrive
    joined by commas); other preferences, and a ``wait`` that is not a number of seconds,
    are ignored, as RFC 7240 §2 has a server do."""
    if not header:
        return Preference()
    wait = None
    respond_async = False
    for match in _PREFERENCE.finditer(header):
        name, value = match.group(1).lower(), (match.group(2) or "").strip('"')
        if name == RESPOND_ASYNC:
            respond_async = True
        elif name == WAIT and wait is None and value.isdigit():
            wait = float(value)
    return Preference(wait, respond_async)


@dataclass(frozen=True)
class HoldDecision:
    seconds: float   # 0: answer 202 at once
    applied: str     # the Preference-Applied value ('' for none)


def decide(preference: Preference, admission: Admission, default: float) -> HoldDecision:
    """Say how long to hold a queued request, and which preference that honours.

    ``wait=N`` is honoured as asked (and says so); ``respond-async`` alone gets the 202 at
    once. Any hold is at most :data:`MAX_WAIT`. Without either, the agent's hold (or
    ``default``) applies, except to an agent nothing will start: one a user stopped or
    paused (``desired``; an agent the idle rule stopped or paused is woken, so it is held),
    or a ``failed`` one (its crash-loop rule gave up): holding would only delay the 202.
    """
    if preference.wait is not None:
        wait = min(preference.wait, MAX_WAIT)
        return HoldDecision(wait, f"{WAIT}={wait:g}")
    if preference.respond_async:
        return HoldDecision(0.0, RESPOND_ASYNC)
    if not admission.idle and (admission.agent_status is AgentStatus.FAILED or
                               admission.desired in (Desired.STOPPED, Desired.PAUSED)):
        return HoldDecision(0.0, "")
    return HoldDecision(min(default if admission.hold is None else admission.hold, MAX_WAIT),
                        "")
