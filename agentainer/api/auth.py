"""Bearer-token auth: the admin token grants everything, an agent token its agent only."""

import falcon

from agentainer.errors import AgentNotFound, Forbidden, Unauthorized
from agentainer.models import hash_token
from agentainer.store import AgentStore
from agentainer.tokens import matches


class AuthMiddleware:
    """Checks ``Authorization: Bearer`` on every resource not marked ``public``.

    APPSEC: tokens are compared as hashes in constant time and never logged; a token in
    the query string is not accepted (it would end up in access logs).
    """

    def __init__(self, admin_token: str, store: AgentStore) -> None:
        self._admin_hash = hash_token(admin_token)
        self._store = store

    def process_resource(self, req: falcon.Request, resp: falcon.Response,
                         resource: object, params: dict) -> None:
        if resource is None or getattr(resource, "public", False):
            return
        token = _bearer(req.get_header("Authorization"))
        if token is None:
            raise Unauthorized("missing token: send 'Authorization: Bearer <token>' "
                               "(the admin token is in <data_dir>/admin.token)")
        if matches(token, self._admin_hash):
            return
        agent_id = self._store.agent_for_token(hash_token(token))
        if agent_id is None:
            raise Unauthorized("invalid token")
        ref = params.get("agent_id")
        try:
            allowed = ref is not None and self._store.resolve(ref) == agent_id
        except AgentNotFound:
            allowed = False
        if not allowed:
            raise Forbidden("this token is scoped to one agent and does not grant this route")


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
