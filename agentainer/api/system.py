"""Public resources: service health and the OpenAPI document."""

from collections.abc import Callable, Mapping
from typing import Any

import falcon

from agentainer import __version__
from agentainer.api.envelope import failure, ok
from agentainer.errors import Unavailable


class HealthResource:
    """GET /health: the server answers, and says whether its dependencies do.

    ``checks`` maps each dependency's name (``redis``, ``docker``) to its ping: True when
    it answers, or ``Unavailable`` saying why not.
    """

    public = True

    def __init__(self, checks: Mapping[str, Callable[[], bool]]) -> None:
        self._checks = dict(checks)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        results = {}
        for name, check in self._checks.items():
            try:
                results[name] = "ok" if check() else "down"
            except Unavailable as ex:
                results[name] = f"down: {ex.message}"
        healthy = all(value == "ok" for value in results.values())
        data = {"status": "ok" if healthy else "degraded", "version": __version__, **results}
        if healthy:
            ok(resp, "service is healthy", data)
        else:
            resp.status = falcon.HTTP_503
            resp.media = {**failure("service is degraded", "degraded"), "data": data}


class OpenAPIResource:
    """GET /openapi.json."""

    public = True

    def __init__(self, document: dict[str, Any]) -> None:
        self._document = document

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._document
