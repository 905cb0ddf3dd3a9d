"""Resources for /agents: deploy, list, inspect, remove, lifecycle."""

from collections.abc import Callable
from typing import Any

import falcon

from agentainer import units
from agentainer.agents.service import AgentService
from agentainer.agents.spec import parse_deploy, parse_empty
from agentainer.api.envelope import ok
from agentainer.errors import InvalidInput
from agentainer.statuses import AgentStatus

MAX_BODY = 1024 * 1024
_NO_BODY = object()


def read_json(req: falcon.Request, *, optional: bool = False) -> Any:
    """Return the request's JSON body, refusing oversized or non-JSON ones.

    With ``optional``, a request without a body gives None (whatever its Content-Type).
    """
    if optional and not req.content_length and not req.get_header("Transfer-Encoding"):
        return None
    if req.content_length and req.content_length > MAX_BODY:
        raise falcon.HTTPPayloadTooLarge(description=f"body over {MAX_BODY} bytes")
    if req.content_type and not req.content_type.startswith(falcon.MEDIA_JSON):
        raise falcon.HTTPUnsupportedMediaType(description="send application/json")
    try:
        media = req.get_media(default_when_empty=_NO_BODY) if optional else req.get_media()
    except RecursionError:  # NOTE: json.loads on '[[[[…' thousands deep
        raise InvalidInput("the JSON body is nested too deeply", code="invalid_json") from None
    if media is None:  # NOTE: a literal null, not a missing body
        raise InvalidInput("the request body must be a JSON object")
    return None if media is _NO_BODY else media


def refuse_body(req: falcon.Request, what: str) -> None:
    """Refuse a body with any field on a route that takes none (no body or ``{}``)."""
    parse_empty(read_json(req, optional=True), what)


def param(req: falcon.Request, name: str, convert: Callable[[str], Any]) -> Any:
    """Return a converted query parameter, or None when absent."""
    value = req.get_param(name)
    if value is None:
        return None
    try:
        return convert(value)
    except ValueError as ex:
        raise InvalidInput(f"query parameter {name}: {ex}") from ex


class AgentsResource:
    def __init__(self, agents: AgentService) -> None:
        self._agents = agents

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        spec, options = parse_deploy(read_json(req))
        agent = self._agents.deploy(spec, start=options.start, pull=options.pull)
        resp.location = f"/agents/{agent.id}"
        ok(resp, "agent deployed", agent.deployed(), falcon.HTTP_201)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        status = param(req, "status", _status)
        agents = self._agents.list_agents(status=status, name=req.get_param("name"))
        ok(resp, f"{len(agents)} agent(s)", [a.public() for a in agents])


class AgentResource:
    def __init__(self, agents: AgentService) -> None:
        self._agents = agents

    def on_get(self, req: falcon.Request, resp: falcon.Response, agent_id: str) -> None:
        ok(resp, "agent found", self._agents.get(agent_id).public())

    def on_delete(self, req: falcon.Request, resp: falcon.Response, agent_id: str) -> None:
        refuse_body(req, "remove request (volumes is a query parameter)")
        volumes = param(req, "volumes", units.parse_bool) or False
        agent, kept = self._agents.remove(agent_id, volumes=volumes)
        message = f"agent {agent.name} ({agent.id}) removed"
        if kept:
            message += (f"; volumes kept (not created by Agentainer for this agent, or still "
                        f"in use): {', '.join(kept)}")
        ok(resp, message, {"id": agent.id, "name": agent.name, "kept_volumes": kept})


class LifecycleResource:
    """POST /agents/{id}/<operation>, one instance per operation."""

    def __init__(self, agents: AgentService, operation: str) -> None:
        self._action = getattr(agents, operation)
        self._operation = operation

    def on_post(self, req: falcon.Request, resp: falcon.Response, agent_id: str) -> None:
        refuse_body(req, f"{self._operation} request")
        agent = self._action(agent_id)
        ok(resp, f"agent {agent.name} is {agent.status.value}", agent.public())


def _status(value: str) -> AgentStatus:
    try:
        return AgentStatus(value)
    except ValueError:
        choices = ", ".join(s.value for s in AgentStatus)
        raise ValueError(f"{value!r} is not a status ({choices})") from None


MAX_COUNT = 2 ** 63 - 1  # NOTE: Redis takes signed 64-bit integers


def whole_number(value: str) -> int:
    """Convert a query parameter holding a count (0 up to 2^63 - 1)."""
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_COUNT:
        raise ValueError(f"{value!r} is not a whole number below 2^63")
    return int(value)
