"""Every Redis key name Agentainer uses, built here and nowhere else.

All keys live under :data:`PREFIX`. What each key holds is documented by the module that
owns it: agents (:mod:`agentainer.agents.store`), the request journal
(:mod:`agentainer.journal.journal`, whose Lua scripts in :mod:`agentainer.journal.scripts`
get these names through :func:`lua_names`), live captures of responses
(:mod:`agentainer.journal.live`), process liveness (:mod:`agentainer.journal.liveness`),
drain claims (:mod:`agentainer.journal.replay`), the monitor's health and metrics
(:mod:`agentainer.agents.observations`), and webhook events and deliveries
(:mod:`agentainer.webhooks.outbox`).
"""

PREFIX = "agentainer:"

# Key families: a family's key is its prefix followed by an ID (``REQUEST + rid``). The
# journal's Lua scripts, which build keys from IDs they read, get these names through
# :func:`lua_names`, so no script spells one.
AGENT = PREFIX + "agent:"
REQUEST = PREFIX + "req:"
QUEUE = PREFIX + "queue:"
REQUESTS = PREFIX + "reqs:"
TICKET = PREFIX + "ticket:"
IDEMPOTENCY = PREFIX + "idem:"
HELD = PREFIX + "held:"
CLAIM = PREFIX + "drain:"
FLYING = PREFIX + "flying:"
RESPONSE_STREAM = PREFIX + "respstream:"
WEBHOOK = PREFIX + "webhook:"
WEBHOOKS = PREFIX + "webhooks:"

# Agents (agents/store.py)
AGENTS = PREFIX + "agents"
NAMES = PREFIX + "names"
TOKENS = PREFIX + "tokens"
RESERVED = PREFIX + "reserved"
INSTANCE = PREFIX + "instance"
COUNTERS = PREFIX + "counters"  # NOTE: shared with the journal's scripts and /metrics


def agent_key(agent_id: str) -> str:
    """The agent's record (HASH)."""
    return AGENT + agent_id


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


def waking_key(agent_id: str) -> str:
    """The claim of the one wake of an idle agent under way (STRING, expiring)."""
    return f"{PREFIX}waking:{agent_id}"


# The request journal (journal/journal.py)
JOURNAL_BYTES = PREFIX + "journal_bytes"
QUEUE_BYTES = PREFIX + "queue_bytes"
LEASES = PREFIX + "leases"
BODIES = PREFIX + "bodies"
QUEUED = PREFIX + "queued"


def request_key(request_id: str) -> str:
    """One journaled request's record (HASH)."""
    return REQUEST + request_id


def queue_key(agent_id: str) -> str:
    """The agent's queued request IDs, oldest first (LIST)."""
    return QUEUE + agent_id


def requests_key(agent_id: str) -> str:
    """Every listed request ID of the agent, by arrival (ZSET)."""
    return REQUESTS + agent_id


def flying_key(agent_id: str) -> str:
    """The agent's in-flight request IDs, leased to a server or a worker (SET):
    ``max_concurrency`` counts them, and the idle rule waits until there are none."""
    return FLYING + agent_id


def ticket_key(agent_id: str) -> str:
    """The agent's last replay lease ticket (STRING)."""
    return TICKET + agent_id


def response_stream_key(request_id: str) -> str:
    """The live capture of one request's response while it is delivered (STREAM,
    journal/live.py)."""
    return RESPONSE_STREAM + request_id


def idempotency_pattern(agent_id: str) -> str:
    """A SCAN pattern matching every idempotency key of the agent (STRINGs)."""
    return f"{IDEMPOTENCY}{agent_id}:*"


# Process liveness (journal/liveness.py)
HOLDERS = PREFIX + "holders"


def alive_key(holder: str) -> str:
    """The holder's heartbeat (STRING, expiring)."""
    return f"{PREFIX}alive:{holder}"


# Drain claims (journal/replay.py)
def claim_key(agent_id: str) -> str:
    """The claim of the agent's pending or running drain (HASH)."""
    return CLAIM + agent_id


def claims_key(holder: str) -> str:
    """The agents whose drain claims a worker holds (SET)."""
    return f"{PREFIX}claims:{holder}"


# Webhooks (webhooks/outbox.py)
WEBHOOK_EVENTS = PREFIX + "webhook_events"
WEBHOOK_DUE = PREFIX + "webhook_due"


def webhook_key(event_id: str) -> str:
    """One webhook event's delivery record (HASH)."""
    return WEBHOOK + event_id


def webhooks_key(agent_id: str) -> str:
    """The agent's webhook deliveries, by event time (ZSET)."""
    return WEBHOOKS + agent_id


def lua_names() -> str:
    """Return Lua that defines ``K``: every key and key family a script may touch, by a
    short name (``K.req .. rid``, ``K.leases``), as this module names them."""
    names = {"agent": AGENT, "req": REQUEST, "queue": QUEUE, "reqs": REQUESTS,
             "ticket": TICKET, "idem": IDEMPOTENCY, "held": HELD, "claim": CLAIM,
             "names": NAMES, "tokens": TOKENS, "counters": COUNTERS, "holders": HOLDERS,
             "journal_bytes": JOURNAL_BYTES, "queue_bytes": QUEUE_BYTES, "leases": LEASES,
             "bodies": BODIES, "queued": QUEUED, "flying": FLYING,
             "respstream": RESPONSE_STREAM, "webhook": WEBHOOK, "webhooks": WEBHOOKS,
             "webhook_events": WEBHOOK_EVENTS, "webhook_due": WEBHOOK_DUE}
    fields = ", ".join(f"{name} = '{value}'" for name, value in names.items())
    return f"local K = {{{fields}}}\n"
