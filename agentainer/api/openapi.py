"""The OpenAPI 3 description of the REST API (a test keeps it true to the routes).

Each operation lists every status it answers in one place (its ``errors``), and each
parameter and field the constraints the server enforces (agents/spec.py,
api/lifecycle.py), so that a fuzzer generating from this document gets exactly what it
describes.
"""

from typing import Any

from agentainer import __version__, units
from agentainer.agents.spec import (
    ANY_AGENT, MAX_CONCURRENCY, MAX_CONSTRAINTS, MAX_ENV, MAX_MAY_CALL, MAX_REPLICAS, MAX_TOKEN,
    MAX_VOLUMES,
)
from agentainer.api.lifecycle import MAX_COUNT  # NOTE: whole_number's bound
from agentainer.names import (
    CONSTRAINT_PATTERN,
    IMAGE_MAX, IMAGE_PATTERN, WEBHOOK_SECRET_PATTERN, WEBHOOK_URL_MAX, WEBHOOK_URL_PATTERN,
)
from agentainer.statuses import OPERATIONS, AgentStatus, IdleAction, OnBusy, RequestStatus
from agentainer.webhooks.outbox import HISTORY

# NOTE: patterns are the validators' (agents/spec.py, units.py) with full-match anchors
NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
AGENT_ID = r"^agent-[0-9a-f]{12}$"
DURATION = r"^[0-9]{1,9}(\.[0-9]{1,3})?(ms|s|m|h)?$"
CPU = r"^([1-9][0-9]{0,2}(\.[0-9]{1,3})?|0\.[0-9]{0,2}[1-9]|[1-9][0-9]{0,5}m)$"
SINCE = units.SINCE.pattern  # NOTE: a duration ago or a Unix time; the CLI converts ISO-8601
# NOTE: health checks: an interval of at least 1 s, a timeout above 0
INTERVAL = r"^([1-9][0-9]{0,8}(\.[0-9]{1,3})?(s|m|h)?|[1-9][0-9]{3,8}(\.[0-9]{1,3})?ms)$"
POSITIVE = (r"^([1-9][0-9]{0,8}(\.[0-9]{1,3})?|0\.([1-9][0-9]{0,2}|0[1-9][0-9]?|00[1-9]))"
            r"(ms|s|m|h)?$")
# NOTE: a container path: absolute, with a segment other than "." (so not "/"), no ".."
CONTAINER_PATH = {"type": "string", "allOf": [{"pattern": "^/"},
                                              {"pattern": r"/([^/.]|\.[^/.]|\.\.[^/])"}],
                  "not": {"pattern": r"(^|/)\.\.(/|$)"}}
BOOLEAN = {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no", "on", "off"]}
_AGENT_ID = {"name": "agent_id", "in": "path", "required": True,
             "description": "the agent's ID or name",
             "schema": {"type": "string", "minLength": 1, "pattern": r"^[^/]+$"}}
_REQUEST_ID = {"name": "request_id", "in": "path", "required": True,
               "description": "the request's ID (X-Agentainer-Request-Id)",
               "schema": {"type": "string", "minLength": 1, "pattern": r"^[^/]+$"}}
_ERROR = {"$ref": "#/components/responses/Error"}
# Statuses shared by routes (each operation still lists its own, in one place):
AUTH = ("401", "403")                  # api/auth.py
BODY = ("400", "413", "415")           # api/lifecycle.read_json: bad JSON, too large, not JSON
AGENT = (*AUTH, "404", "503")          # resolves an agent (Redis may be unavailable)


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


def _count(name: str, description: str) -> dict[str, Any]:
    return _query(name, {"type": "integer", "minimum": 0, "maximum": MAX_COUNT}, description)


def _op(summary: str, *, params: tuple = (), body: str | None = None,
        body_required: bool = True, success: str = "200",
        errors: tuple[str, ...] = AGENT, links: dict[str, Any] | None = None,
        public: bool = False, content: str = "application/json") -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "success", "content": {
        content: {"schema": {"$ref": "#/components/schemas/Envelope"}
                  if content == "application/json" else {"type": "string"}}}}
    if links:
        ok["links"] = links
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": list(params),
        # NOTE: every route answers 421 to a Host that is not allowed (hosts.py)
        "responses": {success: ok, **{code: _ERROR for code in sorted({*errors, "421"})}},
    }
    if body:
        operation["requestBody"] = {"required": body_required, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}}}
    if public:
        operation["security"] = []
    return operation


def _lifecycle(verb: str) -> dict[str, Any]:
    return {"post": _op(f"{verb} the agent (see the lifecycle table)", params=(_AGENT_ID,),
                        body="Empty", body_required=False,
                        errors=(*BODY, *AGENT, "409", "422"))}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """Return ``schema`` or null: an optional field sent as null takes its default."""
    return {"anyOf": [schema, {"type": "null"}]}


def _duration(pattern: str, minimum: dict[str, float]) -> dict[str, Any]:
    return {"anyOf": [{"type": "string", "pattern": pattern},
                      {"type": "number", **minimum, "maximum": 1e9}]}


_DEPLOY = {
    "type": "object", "required": ["name", "image"], "additionalProperties": False,
    # NOTE: an invoke token is for a private agent, and a private agent needs one
    "allOf": [
        {"if": {"required": ["token"], "properties": {"token": {"type": "string"}}},
         "then": {"required": ["private"], "properties": {"private": {"const": True}}}},
        {"if": {"required": ["private"], "properties": {"private": {"const": True}}},
         "then": {"required": ["token"], "properties": {"token": {"type": "string"}}}},
        # NOTE: a webhook secret signs a webhook's events
        {"if": {"required": ["webhook_secret"],
                "properties": {"webhook_secret": {"type": "string"}}},
         "then": {"required": ["webhook"], "properties": {"webhook": {"type": "string"}}}},
    ],
    "properties": {
        "name": {"type": "string", "pattern": NAME, "not": {"pattern": AGENT_ID}},
        "image": {"type": "string", "pattern": IMAGE_PATTERN, "maxLength": IMAGE_MAX,
                  "examples": ["agentainer/echo-agent:latest"]},
        "env_vars": _nullable({
            "type": "object", "maxProperties": MAX_ENV,
            "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$",
                              "not": {"enum": ["AGENT_ID", "AGENT_NAME",
                                               "AGENTAINER_PROXY_URL"]}},
            "additionalProperties": {"type": "string", "pattern": "^[^\\x00]*$"}}),
        "cpu_limit": _nullable({"anyOf": [
            {"type": "string", "pattern": CPU},
            {"type": "number", "minimum": 0.001, "maximum": 1024}]}),
        "memory_limit": _nullable({"anyOf": [
            {"type": "string", "pattern": r"^(([6-9]|[1-9][0-9]{1,3})[mM]|[1-9][0-9]{0,3}[gG])(i|B)?$"},
            {"type": "integer", "minimum": 6 * 1024 * 1024, "maximum": 2 ** 50}]}),
        "pids_limit": _nullable({"type": "integer", "minimum": 1, "maximum": 2 ** 31 - 1}),
        "auto_restart": _nullable({"type": "boolean"}),
        "token": _nullable({"type": "string", "minLength": 16, "maxLength": MAX_TOKEN,
                            "writeOnly": True,
                            "description": "invoke token of a private agent (requires "
                                           "private): its proxy path only"}),
        "manage_token": _nullable({"type": "string", "minLength": 16, "maxLength": MAX_TOKEN,
                                   "writeOnly": True,
                                   "description": "manage token: this agent's "
                                                  "/agents/{agent_id} routes only"}),
        "volumes": _nullable({"type": "array", "maxItems": MAX_VOLUMES, "items": {
            "type": "object", "additionalProperties": False, "required": ["container_path"],
            "oneOf": [{"required": ["host_path"]}, {"required": ["volume"]}],
            "properties": {"host_path": {"type": "string", "pattern": "^/"},
                           "volume": {"type": "string",
                                      "pattern": r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$"},
                           "container_path": CONTAINER_PATH,
                           "read_only": {"type": "boolean"}}},
            "description": "each with exactly one of host_path and volume; two at one "
                           "container_path (once normalised) are 409 volume_conflict"}),
        "health_check": _nullable({
            "type": "object", "additionalProperties": False, "properties": {
                "endpoint": {"type": "string", "pattern": "^/"},
                "interval": _duration(INTERVAL, {"minimum": 1}),
                "timeout": _duration(POSITIVE, {"exclusiveMinimum": 0}),
                "retries": {"anyOf": [{"type": "integer", "minimum": 1},
                                      {"type": "string", "pattern": "^0*[1-9][0-9]{0,8}$"}]}},
            "description": "interval at least 1s, timeout above 0"}),
        "app_port": _nullable({"type": "integer", "minimum": 1, "maximum": 65535}),
        "egress": _nullable({"type": "boolean", "default": True}),
        "private": _nullable({"type": "boolean", "default": False,
                              "description": "requires token"}),
        "may_call": _nullable({
            "anyOf": [{"type": "array", "minItems": 1, "maxItems": 1,
                       "items": {"type": "string", "const": ANY_AGENT}},
                      {"type": "array", "maxItems": MAX_MAY_CALL,
                       "items": {"type": "string", "pattern": NAME}}],
            "description": "agents (names or IDs) this one may call through the network "
                           "gateway ($AGENTAINER_PROXY_URL); [\"*\"]: any, []: none. "
                           "Default: any, or none when egress is false. Others get 403 "
                           "call_not_allowed"}),
        "persist": _nullable({"type": "boolean", "default": True}),
        "ordered": _nullable({"type": "boolean", "default": True,
                              "description": "a new request waits behind the agent's "
                                             "queued backlog; false lets it overtake"}),
        "max_concurrency": _nullable({
            "type": "integer", "minimum": 0, "maximum": MAX_CONCURRENCY, "default": 0,
            "description": "requests in flight to the agent at once (0: no limit); "
                           "needs persist (409 concurrency_needs_persist)"}),
        "on_busy": _nullable({"type": "string", "enum": list(OnBusy), "default": "queue",
                              "description": "at max_concurrency: queue, or reject with "
                                             "429 agent_at_capacity"}),
        "hold": _nullable({**_duration(DURATION, {"minimum": 0}),
                           "description": "seconds (or 30s, 500ms...) a queued request "
                                          "holds its connection for the answer before "
                                          "202; default: the hold setting"}),
        "idle_timeout": _nullable({
            **_duration(DURATION, {"minimum": 0}),
            "description": "stop or pause the agent (idle_action) after this long with no "
                           "request in flight or queued; a request wakes it. 0: never. "
                           "Needs persist (else 409 idle_needs_persist)"}),
        "idle_action": _nullable({"type": "string", "enum": list(IdleAction),
                                  "default": IdleAction.STOP.value}),
        "webhook": _nullable({
            "type": "string", "pattern": WEBHOOK_URL_PATTERN, "maxLength": WEBHOOK_URL_MAX,
            "examples": ["http://127.0.0.1:9000/hooks"],
            "description": "URL the agent's events are POSTed to, signed as Standard "
                           "Webhooks says (request.completed, request.failed, "
                           "agent.crashed, agent.restarted, agent.failed, agent.idle, "
                           "agent.woken); any host, loopback included"}),
        "webhook_secret": _nullable({
            "type": "string", "pattern": WEBHOOK_SECRET_PATTERN, "writeOnly": True,
            "description": "its signing secret (requires webhook); omitted: generated. "
                           "The deploy's answer shows it (data.webhook_secret), once"}),
        "replicas": _nullable({
            "type": "integer", "minimum": 1, "maximum": MAX_REPLICAS, "default": 1,
            "description": "tasks of the agent's Swarm service, the proxy spreading "
                           "requests over them (for stateless agents); over 1 needs "
                           "runtime = swarm (else 409 needs_swarm)"}),
        "constraints": _nullable({
            "type": "array", "maxItems": MAX_CONSTRAINTS,
            "items": {"type": "string", "pattern": CONSTRAINT_PATTERN},
            "description": "Swarm placement constraints (node.labels.gpu==true, "
                           "node.role!=manager...); need runtime = swarm (else 409 "
                           "needs_swarm)"}),
        "start": _nullable({"type": "boolean", "default": False}),
        "pull": _nullable({"type": "boolean", "default": False,
                           "description": "pull the image from its registry first (even "
                                          "when present locally); a failed pull is "
                                          "image_pull_failed (404: no such image; 503: "
                                          "registry unreachable) and creates nothing"}),
    },
}

# Lifecycle operations, remove, cancel and replay take no fields: no body, or {}.
_EMPTY = {"type": "object", "additionalProperties": False, "properties": {}}
def _header(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": schema}


def _response() -> dict[str, Any]:
    """GET .../response (api/responses.py): the agent's status and body, or 206."""
    operation = _op(
        "the request's captured response, as the agent sent it: followed live while in "
        "flight, then from the record; resumable", content="*/*",
        params=(_AGENT_ID, _REQUEST_ID,
                _header("Range", {"type": "string", "pattern": r"^bytes=[0-9]{1,18}-$"},
                        "resume after the first N bytes (only bytes=N-; other forms, and a "
                        "Range beside a Last-Event-ID, are ignored): 206 with Content-Range "
                        "once completed; live, the agent's status from N, with "
                        "X-Agentainer-Offset (the length is not known yet)"),
                _header("Last-Event-ID", {"type": "string"},
                        "resume an event stream right after the event with this id "
                        "(404 event_not_found; 400 not_event_stream)"),
                _header("X-Agentainer-Resume-Token", {"type": "string"},
                        "the request's resume token (from the proxy's answer)"),
                _query("token", {"type": "string"}, "the resume token, for an EventSource"),
                _query("wait", {"type": "string", "pattern": DURATION},
                       "how long a queued request's response may take to start (default "
                       "30s, at most 300s; then 409 response_pending)")),
        errors=("400", *AGENT, "409", "416"))
    ok = operation["responses"]["200"]
    operation["responses"]["206"] = {"description": "the completed body from the Range",
                                     "content": ok["content"]}
    ok["headers"] = {name: {"description": description, "schema": {"type": "string"}}
                     for name, description in (
        ("X-Agentainer-Response-Status", "the agent's status"),
        ("X-Agentainer-Request-Status", "the record's status as the answer began"),
        ("X-Agentainer-Response-Live", "true: followed as the agent writes it"),
        ("X-Agentainer-Offset", "the body position this answer starts at"),
        ("X-Agentainer-Response-Truncated", "true: the kept body stops at capture_limit"))}
    operation["security"] = [{"bearer": []}, {"resumeToken": []}, {"resumeTokenQuery": []}]
    return operation


_AGENT_PATHS = ("/agents/{agent_id}", *(f"/agents/{{agent_id}}/{verb}" for verb in (
    *OPERATIONS, "logs", "health", "metrics", "metrics/history", "requests", "webhooks")))


def _deployed_links() -> dict[str, Any]:
    """Link a deploy's answer to every operation taking its agent (stateful testing)."""
    links = {}
    for path in _AGENT_PATHS:
        for method in ("get", "post", "delete"):
            if method in PATHS.get(path, {}):
                pointer = path.replace("/", "~1")
                links[f"{method}{path.replace('/', '_').replace('{agent_id}', 'id')}"] = {
                    "operationRef": f"#/paths/{pointer}/{method}",
                    "parameters": {"agent_id": "$response.body#/data/id"}}
    return links


PATHS: dict[str, dict[str, Any]] = {
    "/health": {"get": _op("service health, with Redis and Docker reachability",
                           public=True, errors=("503",))},
    "/openapi.json": {"get": _op("this document", public=True, errors=())},
    "/agents": {
        "post": _op("deploy an agent (created; start=true also starts it; pull=true pulls "
                    "the image first)", body="Deploy", success="201",
                    errors=(*BODY, *AUTH, "404", "409", "422", "503")),
        "get": _op("list agents", params=(
            _query("status", {"type": "string", "enum": [s.value for s in AgentStatus]},
                   "only agents with this status"),
            _query("name", {"type": "string"}, "substring of the name")),
            errors=("400", *AUTH, "503")),
    },
    "/agents/{agent_id}": {
        "get": _op("one agent", params=(_AGENT_ID,)),
        "delete": _op("remove the agent, its container and records", params=(
            _AGENT_ID, _query("volumes", BOOLEAN,
                              "also remove the named volumes Agentainer created for it "
                              "(others are kept and listed in kept_volumes)")),
            body="Empty", body_required=False, errors=(*BODY, *AGENT, "409", "422")),
    },
    **{f"/agents/{{agent_id}}/{verb}": _lifecycle(verb) for verb in OPERATIONS},
    "/agents/{agent_id}/requests": {"get": _op(
        "the agent's journaled requests, newest first", params=(
            _AGENT_ID,
            _query("status", {"type": "string", "enum": [s.value for s in RequestStatus]},
                   "only requests with this status"),
            _count("offset", "skip this many"),
            _count("limit", "page size (0: 50; at most 500)")),
        errors=("400", *AGENT))},
    "/agents/{agent_id}/requests/{request_id}": {
        "get": _op("one request with its captured response", params=(_AGENT_ID, _REQUEST_ID)),
        "delete": _op("cancel a queued request", params=(_AGENT_ID, _REQUEST_ID),
                      body="Empty", body_required=False, errors=(*BODY, *AGENT, "409")),
    },
    "/agents/{agent_id}/requests/{request_id}/replay": {"post": _op(
        "put a queued, failed or cancelled request at the front of the queue and drain it",
        params=(_AGENT_ID, _REQUEST_ID), body="Empty", body_required=False,
        errors=(*BODY, *AGENT, "409"))},
    "/agents/{agent_id}/requests/{request_id}/response": {"get": _response()},
    "/agents/{agent_id}/webhooks": {"get": _op(
        "the agent's webhook deliveries, newest event first: each event's type, status "
        "(pending, delivered, failed), attempts, last status code or error, times",
        params=(_AGENT_ID, _count("limit", f"how many (0: {HISTORY}; at most {HISTORY})")),
        errors=("400", *AGENT))},
    "/agents/{agent_id}/health": {"get": _op(
        "the monitor's last health probe, restarts and last failure", params=(_AGENT_ID,))},
    "/agents/{agent_id}/metrics": {"get": _op(
        "live CPU %, memory used/limit, network rx/tx, block I/O, pids",
        params=(_AGENT_ID,), errors=(*AGENT, "409", "422"))},
    "/agents/{agent_id}/metrics/history": {"get": _op(
        "sampled metrics over a duration (at most 24h)",
        params=(_AGENT_ID, _query("duration", {"type": "string", "pattern": DURATION},
                                  "e.g. 10m, 1h (default 1h; longer is cut to 24h)")),
        errors=("400", *AGENT))},
    "/metrics": {"get": _op("the control plane in the Prometheus text format",
                            content="text/plain", errors=(*AUTH, "503"))},
    "/agents/{agent_id}/logs": {"get": _op(
        "the container's output, demultiplexed plain text, streamed", content="text/plain",
        params=(_AGENT_ID, _query("follow", BOOLEAN, "keep streaming new lines"),
                _count("tail", "only the last N lines"),
                _query("since", {"type": "string", "pattern": SINCE},
                       "10m, a Unix time or ISO-8601"),
                _query("timestamps", BOOLEAN, "prefix each line with its time")),
        errors=("400", *AGENT, "409", "422"))},
}
PATHS["/agents"]["post"]["responses"]["201"]["links"] = _deployed_links()


# The proxy is a sink, not a route; it is described here for readers of the document.
PROXY = {
    "/agent/{agent_id}/{path}": {method: _op(
        "the proxy: forwarded to the agent, or queued when it cannot take it now (the "
        "agent is down, has a backlog, or is at max_concurrency): then held for the "
        "answer (Prefer: wait=N, or the agent's hold) or answered 202 + Location "
        "(Prefer: respond-async, or when the hold runs out); Preference-Applied says which",
        params=(_AGENT_ID, {"name": "path", "in": "path", "required": True,
                            "schema": {"type": "string"}},
                {"name": "Prefer", "in": "header", "required": False,
                 "schema": {"type": "string", "examples": ["wait=10", "respond-async"]},
                 "description": "RFC 7240: wait=N holds a queued request up to N seconds "
                                "(at most 3600) for the agent's answer; respond-async asks "
                                "for the 202 at once"}),
        success="200",
        errors=("202", "400", "401", "403", "404", "409", "413", "422", "429", "502", "503",
                "504", "507"),
        public=True, content="*/*")
        for method in ("get", "post", "put", "patch", "delete", "head", "options")},
}


def document() -> dict[str, Any]:
    """Return the OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Agentainer", "version": __version__,
                 "description": "Run LLM agents as Docker containers behind one proxy. "
                                "Requests whose Host is not an IP address, localhost, the "
                                "listen host or in allowed_hosts get 421 host_not_allowed; "
                                "on <agent>.localhost every path is proxied to that agent."},
        "security": [{"bearer": []}],
        "paths": {**PATHS, **PROXY},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                # NOTE: one request's response only (GET .../response)
                "resumeToken": {"type": "apiKey", "in": "header",
                                "name": "X-Agentainer-Resume-Token"},
                "resumeTokenQuery": {"type": "apiKey", "in": "query", "name": "token"}},
            "schemas": {
                "Deploy": _DEPLOY,
                "Empty": _EMPTY,
                "Envelope": {"type": "object", "required": ["success", "message"],
                             "properties": {"success": {"type": "boolean"},
                                            "message": {"type": "string"},
                                            "data": {}, "error": {"type": "string"}}},
            },
            "responses": {"Error": {"description": "error envelope with a stable code",
                                    "content": {"application/json": {"schema": {
                                        "$ref": "#/components/schemas/Envelope"}}}}},
        },
    }
