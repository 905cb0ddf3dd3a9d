"""The statuses the API, the CLI and the services share: agents', requests' and the
lifecycle table, as data (stdlib only)."""

import enum
from dataclasses import dataclass


class AgentStatus(enum.StrEnum):
    """What Docker says the agent's container is doing."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    FAILED = "failed"


class RequestStatus(enum.StrEnum):
    """Where a journaled request is: queued, in flight, or in one terminal state."""

    QUEUED = "queued"
    IN_FLIGHT = "in_flight"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class OnBusy(enum.StrEnum):
    """What the proxy does with a request to an agent at its ``max_concurrency``."""

    QUEUE = "queue"    # journal it in the agent's queue, in order (held or 202)
    REJECT = "reject"  # refuse it: 429 agent_at_capacity + Retry-After


class Desired(enum.StrEnum):
    """What the user asked the agent to be; the monitor converges toward it."""

    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class Idle(enum.StrEnum):
    """What the idle rule (deploy's ``idle_timeout``) did to the agent: its ``idle`` mark."""

    NONE = ""             # nothing: the agent is as its user left it
    PENDING = "pending"   # found idle; being stopped or paused (its requests queue)
    STOPPED = "stopped"   # stopped for idleness: a request starts it
    PAUSED = "paused"     # paused for idleness: a request unpauses it


class IdleAction(enum.StrEnum):
    """What the idle rule does to an idle agent (deploy's ``idle_action``)."""

    STOP = "stop"
    PAUSE = "pause"


S = AgentStatus


@dataclass(frozen=True)
class Operation:
    """One row of the lifecycle table (:data:`OPERATIONS`).

    ``allowed`` statuses perform the operation, ``noop`` statuses succeed without
    touching Docker, every other status is a conflict with ``hint``. ``summary`` says what
    it does, for the command line's help.
    """

    name: str
    allowed: frozenset[AgentStatus]
    noop: frozenset[AgentStatus]
    hint: str
    desired: Desired
    summary: str

    def check(self, status: AgentStatus) -> bool:
        """Return True when the operation must run, False when it is a no-op.

        Raises:
            ValueError: the status does not allow the operation; the message says why.
        """
        if status in self.allowed:
            return True
        if status in self.noop:
            return False
        raise ValueError(f"cannot {self.name} an agent that is {status.value}; {self.hint}")


def _op(name: str, allowed: set, noop: set, hint: str, desired: Desired,
        summary: str) -> Operation:
    return Operation(name, frozenset(allowed), frozenset(noop), hint, desired, summary)


# NOTE: the one list of lifecycle operations: the service's methods, the API's routes, the
# OpenAPI document and the command line's subcommands all follow it, in this order.
OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        _op("start", {S.CREATED, S.STOPPED, S.FAILED}, {S.RUNNING},
            "use resume for a paused agent", Desired.RUNNING,
            "start a created, stopped or failed agent"),
        _op("stop", {S.RUNNING, S.PAUSED}, {S.STOPPED, S.CREATED, S.FAILED},
            "", Desired.STOPPED,
            "stop a running or paused agent (SIGTERM, grace period, SIGKILL)"),
        _op("restart", {S.RUNNING}, set(),
            "use resume or start", Desired.RUNNING,
            "stop and start a running agent"),
        _op("pause", {S.RUNNING}, set(),
            "only a running agent can be paused", Desired.PAUSED,
            "freeze a running agent (cgroup freezer)"),
        _op("resume", {S.CREATED, S.STOPPED, S.FAILED, S.PAUSED}, {S.RUNNING},
            "", Desired.RUNNING,
            "bring any agent back to running (unpause, start, or recreate its container)"),
    )
}


def observed(recorded: AgentStatus, docker_status: AgentStatus | None) -> AgentStatus:
    """Return the agent's status as Docker shows it.

    ``docker_status`` is None when the container is gone. ``failed`` is Agentainer's own
    verdict (a crash loop, a start that cannot succeed), so it survives a stopped container.
    """
    if docker_status is None or docker_status is AgentStatus.STOPPED:
        return AgentStatus.FAILED if recorded is AgentStatus.FAILED else AgentStatus.STOPPED
    return docker_status
