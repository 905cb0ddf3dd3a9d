"""Bearer-token auth: the admin token grants everything, an agent's manage token that
agent's management routes only (its invoke token is for the proxy, see api/proxy.py)."""

import falcon

from agentainer.agents.spec import TokenScope
from agentainer.agents.store import AgentStore
from agentainer.errors import AgentNotFound, Forbidden, Unauthorized
from agentainer.tokens import hash_token
from agentainer.tokens import matches


class AuthMiddleware:
    """Checks ``Authorization: Bearer`` on every resource not marked ``public`` nor granted
    by its own ``capability(req, params)``.

    Every resource is a management route; the proxy is a sink, which this never sees
    (the journal's ADMIT script checks a private agent's invoke token there).

    APPSEC: tokens are compared as hashes in constant time and never logged; a token in
    the query string is not accepted (it would end up in access logs), but for a request's
    resume token, a read-only capability for one response (api/responses.py).
    """

    def __init__(self, admin_token: str, store: AgentStore) -> None:
        self._admin_hash = hash_token(admin_token)
        self._store = store

    def process_resource(self, req: falcon.Request, resp: falcon.Response,
                         resource: object, params: dict) -> None:
        if resource is None or getattr(resource, "public", False):
            return
        # NOTE: a resource may also be granted by a capability of its own, checked first
        # (a request's resume token, api/responses.py); it raises Forbidden for a wrong one
        capability = getattr(resource, "capability", None)
        if capability is not None and capability(req, params):
            return
        token = _bearer(req.get_header("Authorization"))
        if token is None:
            raise Unauthorized("missing token: send 'Authorization: Bearer <token>' "
                               "(the admin token is in <data_dir>/admin.token)")
        if matches(token, self._admin_hash):
            return
        grant = self._store.token_grant(hash_token(token))
        if grant is None:
            raise Unauthorized("invalid token")
        agent_id, scopes = grant
        ref = params.get("agent_id")
        try:
            own = ref is not None and self._store.resolve(ref) == agent_id
        except AgentNotFound:
            own = False
        if not own:
            raise Forbidden("this token is scoped to one agent and does not grant this route")
        if TokenScope.MANAGE not in scopes:
            raise Forbidden("this is the agent's invoke token: it only calls the agent "
                            "through /agent/<id>/...; managing it takes its manage token "
                            "(deploy --manage-token) or the admin token")


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
