"""Every Redis key name Agentainer uses, built here and nowhere else.

All keys live under :data:`PREFIX`. What each key holds is documented by the module that
owns it: agents (:mod:`agentainer.agents.store`), the request journal
(:mod:`agentainer.journal.journal`, whose Lua scripts in :mod:`agentainer.journal.scripts`
get the prefix as an argument), process liveness (:mod:`agentainer.journal.liveness`),
drain claims (:mod:`agentainer.journal.replay`), and the monitor's health and metrics
(:mod:`agentainer.monitor.probes`, :mod:`agentainer.monitor.metrics`).
"""

PREFIX = "agentainer:"

# Agents (agents/store.py)
AGENTS = PREFIX + "agents"
NAMES = PREFIX + "names"
TOKENS = PREFIX + "tokens"
RESERVED = PREFIX + "reserved"
INSTANCE = PREFIX + "instance"
COUNTERS = PREFIX + "counters"  # NOTE: shared with the journal's scripts and /metrics


def agent_key(agent_id: str) -> str:
    """The agent's record (HASH)."""
    return f"{PREFIX}agent:{agent_id}"


def health_key(agent_id: str) -> str:
    """The agent's latest probe result (HASH, monitor/probes.py)."""
    return f"{PREFIX}health:{agent_id}"


def metrics_key(agent_id: str) -> str:
    """The agent's sampled metrics history (ZSET, monitor/metrics.py)."""
    return f"{PREFIX}metrics:{agent_id}"


def lock_key(agent_id: str) -> str:
    """The agent's lifecycle lock (STRING)."""
    return f"{PREFIX}lock:{agent_id}"


def locks_key(holder: str) -> str:
    """The lifecycle locks one process holds (SET)."""
    return f"{PREFIX}locks:{holder}"


# The request journal (journal/journal.py; its scripts build the same names from PREFIX)
JOURNAL_BYTES = PREFIX + "journal_bytes"
QUEUE_BYTES = PREFIX + "queue_bytes"
LEASES = PREFIX + "leases"
BODIES = PREFIX + "bodies"
QUEUED = PREFIX + "queued"


def request_key(request_id: str) -> str:
    """One journaled request's record (HASH)."""
    return f"{PREFIX}req:{request_id}"


def queue_key(agent_id: str) -> str:
    """The agent's queued request IDs, oldest first (LIST)."""
    return f"{PREFIX}queue:{agent_id}"


def requests_key(agent_id: str) -> str:
    """Every listed request ID of the agent, by arrival (ZSET)."""
    return f"{PREFIX}reqs:{agent_id}"


def ticket_key(agent_id: str) -> str:
    """The agent's last replay lease ticket (STRING)."""
    return f"{PREFIX}ticket:{agent_id}"


def idempotency_pattern(agent_id: str) -> str:
    """A SCAN pattern matching every idempotency key of the agent (STRINGs)."""
    return f"{PREFIX}idem:{agent_id}:*"


# Process liveness (journal/liveness.py)
HOLDERS = PREFIX + "holders"


def alive_key(holder: str) -> str:
    """The holder's heartbeat (STRING, expiring)."""
    return f"{PREFIX}alive:{holder}"


# Drain claims (journal/replay.py)
CLAIM_PREFIX = PREFIX + "drain:"  # NOTE: passed to the reap script, which adds agent IDs


def claim_key(agent_id: str) -> str:
    """The claim of the agent's pending or running drain (HASH)."""
    return CLAIM_PREFIX + agent_id


def claims_key(holder: str) -> str:
    """The agents whose drain claims a worker holds (SET)."""
    return f"{PREFIX}claims:{holder}"
