"""What each listener serves: the main one by ``Host``, the network gateways by caller.

Both run before the app (WSGI wrappers), so a refused request reaches no route; they
answer with the error table's status and code (api/errors.py).
"""

import re
from collections.abc import Callable, Iterable
from urllib.parse import quote

from agentainer.agents.callers import Callers
from agentainer.api.app import WSGIApp
from agentainer.api.hosts import HostPolicy
from agentainer.api.http_errors import wsgi_reply
from agentainer.api.proxy import CALLER_ENV
from agentainer.errors import AgentainerError

_PROXY_PATH = re.compile(r"/agent/([^/]+)")
_NOT_SERVED = (b'{"success": false, "message": "only /agent/... is served here", '
               b'"error": "route_not_found"}')


class HostRouting:
    """Refuses unknown ``Host`` names; routes ``<agent>.localhost`` to that agent.

    On an agent's origin every path is that agent's: ``/x`` is proxied as
    ``/agent/<agent>/x`` (same journal, auth and private-token rules), and so are
    ``/agents`` and ``/agent/<other>/...`` — its pages never reach the management API
    nor another agent on their own origin.
    """

    def __init__(self, app: WSGIApp, policy: HostPolicy) -> None:
        self._app = app
        self._policy = policy

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            agent = self._policy.agent_origin(environ.get("HTTP_HOST"))
        except AgentainerError as ex:
            return wsgi_reply(ex, start_response)
        if agent is not None:
            prefix = f"/agent/{agent}"
            path = environ.get("PATH_INFO") or ""
            uri = environ.get("REQUEST_URI") or ""
            if not uri.startswith("/"):  # NOTE: absolute-form or "*": rebuilt from the path
                query = environ.get("QUERY_STRING")
                uri = quote(path or "/") + (f"?{query}" if query else "")
            environ["PATH_INFO"] = prefix + path
            environ["REQUEST_URI"] = prefix + uri
        return self._app(environ, start_response)


class Gateway:
    """Serves only ``/agent/...``, and only to agents, each calling whom it may.

    APPSEC: agents must never reach the management API, not even to be refused by auth;
    anything else that routes to a gateway (a host process, a container on another
    network) is refused (403 ``not_an_agent``), and an agent calling one its
    ``may_call`` leaves out gets 403 ``call_not_allowed``.
    """

    def __init__(self, app: WSGIApp, callers: Callers) -> None:
        self._app = app
        self._callers = callers

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            caller = self._callers.identify(environ.get("REMOTE_ADDR", ""))
            target = _PROXY_PATH.match(environ.get("PATH_INFO", ""))
            if target is None:
                start_response("404 Not Found", [("Content-Type", "application/json")])
                return [_NOT_SERVED]
            self._callers.check(caller, target.group(1))
        except AgentainerError as ex:
            return wsgi_reply(ex, start_response)
        environ[CALLER_ENV] = caller.id  # NOTE: scopes its Idempotency-Keys (api/proxy.py)
        return self._app(environ, start_response)
