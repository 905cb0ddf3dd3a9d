"""The OpenAPI 3 description of the REST API (a test keeps it true to the routes)."""

from typing import Any

from agentainer import __version__

_AGENT_ID = {"name": "agent_id", "in": "path", "required": True,
             "description": "the agent's ID or name", "schema": {"type": "string"}}
_REQUEST_ID = {"name": "request_id", "in": "path", "required": True,
               "description": "the request's ID (X-Agentainer-Request-Id)",
               "schema": {"type": "string"}}
_ERROR = {"$ref": "#/components/responses/Error"}


def _query(name: str, kind: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": kind}}


def _op(summary: str, *, params: tuple = (), body: str | None = None,
        body_required: bool = True, success: str = "200",
        errors: tuple[str, ...] = ("401", "403", "404", "503"),
        public: bool = False, content: str = "application/json") -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": list(params),
        "responses": {success: {"description": "success", "content": {
            content: {"schema": {"$ref": "#/components/schemas/Envelope"}
                      if content == "application/json" else {"type": "string"}}}},
                      # NOTE: every route, the proxy included: a Host that is not allowed
                      **{code: _ERROR for code in (*errors, "421")}},
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
                        errors=("400", "401", "403", "404", "409", "422", "503"))}


_DEPLOY = {
    "type": "object", "required": ["name", "image"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,62}$"},
        "image": {"type": "string"},
        "env_vars": {"type": "object", "additionalProperties": {"type": "string"}},
        "cpu_limit": {"oneOf": [{"type": "integer"}, {"type": "string"}],
                      "description": "1, 0.5, 500m or nanoCPUs"},
        "memory_limit": {"oneOf": [{"type": "integer"}, {"type": "string"}],
                         "description": "512m, 1g, 512Mi or bytes (binary units)"},
        "pids_limit": {"type": "integer", "minimum": 1},
        "auto_restart": {"type": "boolean"},
        "token": {"type": "string", "minLength": 16, "maxLength": 512, "writeOnly": True,
                  "description": "invoke token of a private agent: its proxy path only"},
        "manage_token": {"type": "string", "minLength": 16, "maxLength": 512,
                         "writeOnly": True,
                         "description": "manage token: this agent's /agents/{agent_id} "
                                        "routes only, not its proxy path"},
        "volumes": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["container_path"],
            "properties": {"host_path": {"type": "string"}, "volume": {"type": "string"},
                           "container_path": {"type": "string"},
                           "read_only": {"type": "boolean"}}}},
        "health_check": {"type": "object", "additionalProperties": False, "properties": {
            "endpoint": {"type": "string"}, "interval": {"type": ["string", "number"]},
            "timeout": {"type": ["string", "number"]}, "retries": {"type": "integer"}}},
        "app_port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "egress": {"type": "boolean", "default": True},
        "private": {"type": "boolean", "default": False},
        "may_call": {"type": "array", "maxItems": 100, "items": {"type": "string"},
                     "description": "agents (names or IDs) this one may call through the "
                                    "network gateway ($AGENTAINER_PROXY_URL); [\"*\"]: any, "
                                    "[]: none. Default: any, or none when egress is false. "
                                    "Others get 403 call_not_allowed"},
        "persist": {"type": "boolean", "default": True},
        "start": {"type": "boolean", "default": False},
        "pull": {"type": "boolean", "default": False,
                 "description": "pull the image from its registry first (even when present "
                                "locally); a failed pull is image_pull_failed (404: no such "
                                "image; 503: registry unreachable) and "
                                "creates nothing"},
    },
}

# Lifecycle operations, remove, cancel and replay take no fields: no body, or {}.
_EMPTY = {"type": "object", "additionalProperties": False, "properties": {}}

PATHS: dict[str, dict[str, Any]] = {
    "/health": {"get": _op("service health, with Redis and Docker reachability",
                           public=True, errors=("503",))},
    "/openapi.json": {"get": _op("this document", public=True, errors=())},
    "/agents": {
        "post": _op("deploy an agent (created; start=true also starts it; pull=true pulls "
                    "the image first)", body="Deploy",
                    success="201", errors=("400", "401", "403", "404", "409", "503")),
        "get": _op("list agents", params=(
            _query("status", "string", "created, running, paused, stopped or failed"),
            _query("name", "string", "substring of the name"))),
    },
    "/agents/{agent_id}": {
        "get": _op("one agent", params=(_AGENT_ID,)),
        "delete": _op("remove the agent, its container and records", params=(
            _AGENT_ID, _query("volumes", "boolean",
                              "also remove the named volumes Agentainer created for it "
                              "(others are kept and listed in kept_volumes)")),
            body="Empty", body_required=False,
            errors=("400", "401", "403", "404", "503")),
    },
    **{f"/agents/{{agent_id}}/{verb}": _lifecycle(verb)
       for verb in ("start", "stop", "restart", "pause", "resume")},
    "/agents/{agent_id}/requests": {"get": _op(
        "the agent's journaled requests, newest first", params=(
            _AGENT_ID,
            _query("status", "string", "queued, in_flight, completed, failed or cancelled"),
            _query("offset", "integer", "skip this many"),
            _query("limit", "integer", "page size (at most 500)")))},
    "/agents/{agent_id}/requests/{request_id}": {
        "get": _op("one request with its captured response", params=(_AGENT_ID, _REQUEST_ID)),
        "delete": _op("cancel a queued request", params=(_AGENT_ID, _REQUEST_ID),
                      body="Empty", body_required=False,
                      errors=("400", "401", "403", "404", "409", "503")),
    },
    "/agents/{agent_id}/requests/{request_id}/replay": {"post": _op(
        "put a queued, failed or cancelled request at the front of the queue and drain it",
        params=(_AGENT_ID, _REQUEST_ID), body="Empty", body_required=False,
        errors=("400", "401", "403", "404", "409", "503"))},
    "/agents/{agent_id}/health": {"get": _op(
        "the monitor's last health probe, restarts and last failure", params=(_AGENT_ID,))},
    "/agents/{agent_id}/metrics": {"get": _op(
        "live CPU %, memory used/limit, network rx/tx, block I/O, pids",
        params=(_AGENT_ID,), errors=("401", "403", "404", "409", "503"))},
    "/agents/{agent_id}/metrics/history": {"get": _op(
        "sampled metrics over a duration (at most 24h)",
        params=(_AGENT_ID, _query("duration", "string", "e.g. 10m, 1h (default 1h)")))},
    "/metrics": {"get": _op("the control plane in the Prometheus text format",
                            content="text/plain", errors=("401", "403"))},
    "/agents/{agent_id}/logs": {"get": _op(
        "the container's output, demultiplexed plain text, streamed", content="text/plain",
        params=(_AGENT_ID, _query("follow", "boolean", "keep streaming new lines"),
                _query("tail", "integer", "only the last N lines"),
                _query("since", "string", "10m, a Unix time or ISO-8601"),
                _query("timestamps", "boolean", "prefix each line with its time")))},
}


# The proxy is a sink, not a route; it is described here for readers of the document.
PROXY = {
    "/agent/{agent_id}/{path}": {method: _op(
        "the proxy: forwarded to the agent, or queued (202) when it cannot take it",
        params=(_AGENT_ID, {"name": "path", "in": "path", "required": True,
                            "schema": {"type": "string"}}),
        success="200",
        errors=("202", "401", "403", "404", "409", "413", "422", "502", "503", "504", "507"),
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
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
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
