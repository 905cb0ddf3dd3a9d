"""The error tree: every failure Agentainer reports has a category and a stable code.

Foreign errors (docker, redis) are translated into these once, where they are raised
(``agents/docker_runtime.py``, ``agents/store.py``); ``api/http_errors.py`` maps the
categories to HTTP statuses.
"""


class AgentainerError(Exception):
    """Base of every error Agentainer reports to a user."""

    code = "error"
    retry_after: int | None = None  # NOTE: seconds, sent as Retry-After when set

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(AgentainerError):
    """The request or the settings are malformed (HTTP 400)."""

    code = "invalid_input"


class InvalidConfig(InvalidInput):
    """A configuration value is invalid; the message names file, key and value."""

    code = "invalid_config"


class Unauthorized(AgentainerError):
    """No credentials, or credentials that match nothing (HTTP 401)."""

    code = "unauthorized"


class Forbidden(AgentainerError):
    """Valid credentials that do not grant this route (HTTP 403)."""

    code = "forbidden"


class MountRefused(Forbidden):
    """A bind mount or named volume the mount policy refuses (at deploy or at a start).

    NOTE: 403, not 400: the request is well-formed; the host's policy forbids it.
    """

    code = "volume_refused"


class NotAnAgent(Forbidden):
    """A connection to a network gateway that no Agentainer container opened."""

    code = "not_an_agent"

    def __init__(self, address: str) -> None:
        super().__init__(f"{address} is not one of Agentainer's agents: the network gateways "
                         "serve only agents' calls to other agents")
        self.address = address


class CallNotAllowed(Forbidden):
    """An agent calling, through the gateway, an agent its ``may_call`` does not name."""

    code = "call_not_allowed"

    def __init__(self, caller: str, target: str) -> None:
        super().__init__(f"agent {caller} may not call agent {target!r} (its may_call; "
                         "redeploy with --may-call to change it)")
        self.caller = caller
        self.target = target


class Misdirected(AgentainerError):
    """The request names a host this server does not answer for (HTTP 421)."""

    code = "misdirected"


class HostNotAllowed(Misdirected):
    """A ``Host`` header that is neither a loopback name, an agent origin nor allowed."""

    code = "host_not_allowed"

    def __init__(self, host: str) -> None:
        super().__init__(f"this server does not answer for host {host!r} (DNS rebinding "
                         "protection): use 127.0.0.1, localhost or <agent>.localhost, or add "
                         "the name to allowed_hosts")
        self.host = host


class NotFound(AgentainerError):
    """The named thing does not exist (HTTP 404)."""

    code = "not_found"


class AgentNotFound(NotFound):
    code = "agent_not_found"

    def __init__(self, ref: str) -> None:
        super().__init__(f"agent {ref!r} not found (use the agent's ID or name; "
                         "'agentainer list' shows them)")
        self.ref = ref


class ImageNotFound(NotFound):
    code = "image_not_found"

    def __init__(self, image: str) -> None:
        super().__init__(f"image {image!r} is not present locally; build or load it first "
                         "(for the examples: make images)")
        self.image = image


class Conflict(AgentainerError):
    """The request clashes with the current state (HTTP 409)."""

    code = "conflict"


class RangeNotSatisfiable(AgentainerError):
    """A position in a response that it does not have, or was not kept (HTTP 416)."""

    code = "range_not_satisfiable"


class BeyondCapture(RangeNotSatisfiable):
    """A position past the part of a response the journal kept (``capture_limit``)."""

    code = "beyond_capture"

    def __init__(self, request_id: str, kept: int) -> None:
        super().__init__(f"the journal kept only the first {kept} bytes of the response to "
                         f"{request_id} (capture_limit); it cannot resume past them")
        self.kept = kept


class NameTaken(Conflict):
    code = "name_taken"

    def __init__(self, name: str) -> None:
        super().__init__(f"an agent named {name!r} already exists")
        self.name = name


class InvalidTransition(Conflict):
    """A lifecycle operation that the agent's status does not allow."""

    code = "invalid_state"


class Busy(Conflict):
    """Another lifecycle operation holds the agent's lock."""

    code = "agent_busy"


class Unavailable(AgentainerError):
    """A backing service (Docker, Redis) cannot be reached, or a limit is reached for now
    (HTTP 503, with Retry-After)."""

    code = "unavailable"
    retry_after = 5


class QueueFull(Unavailable):
    """An agent's queue holds ``queue_limit`` requests or ``queue_max_bytes``."""

    code = "queue_full"

    def __init__(self, agent: str) -> None:
        super().__init__(f"the queue of agent {agent} is full (queue_limit requests or "
                         "queue_max_bytes); retry later")


class AgentOverloaded(Unavailable):
    """This server process already forwards ``agent_max_inflight`` requests to the agent."""

    code = "agent_overloaded"

    def __init__(self, agent: str) -> None:
        super().__init__(f"agent {agent} already has agent_max_inflight requests in flight "
                         "through this server process; retry later")


class TooManyFollows(Unavailable):
    """This server process already streams ``follow_limit`` follows (``logs?follow=true``
    and live reads of responses)."""

    code = "too_many_follows"

    def __init__(self, limit: int) -> None:
        super().__init__(f"this server process already streams {limit} follows (logs or live "
                         "responses; follow_limit); retry later")


class TooManyRequests(AgentainerError):
    """The caller must slow down: a limit of the target, not of Agentainer (HTTP 429, with
    Retry-After)."""

    code = "too_many_requests"
    retry_after = 1


class AgentAtCapacity(TooManyRequests):
    """The agent has ``max_concurrency`` requests in flight and its ``on_busy`` is reject."""

    code = "agent_at_capacity"

    def __init__(self, agent: str) -> None:
        super().__init__(f"agent {agent} has its max_concurrency requests in flight and "
                         "refuses more (on_busy reject); retry later")


class InsufficientStorage(AgentainerError):
    """A storage budget is used up (HTTP 507, with Retry-After)."""

    code = "insufficient_storage"
    retry_after = 30


class JournalFull(InsufficientStorage):
    """The journal holds ``journal_max_bytes``, or Redis reached its ``maxmemory``."""

    code = "journal_full"


class Unprocessable(AgentainerError):
    """Well-formed, but cannot be carried out as asked (HTTP 422)."""

    code = "unprocessable"


class RuntimeFailure(Unprocessable):
    """Docker refused an operation for a reason the user must act on."""

    code = "runtime_error"
