"""Domain errors to HTTP, in one table; every error reply carries a stable code."""

import json
import logging
from collections.abc import Callable

import falcon

from agentainer.api.envelope import failure
from agentainer.errors import (
    AgentainerError, Conflict, Forbidden, InsufficientStorage, InvalidInput, Misdirected,
    NotFound, RangeNotSatisfiable, TooManyRequests, Unauthorized, Unavailable, Unprocessable,
)

logger = logging.getLogger(__name__)

# NOTE: order matters: the first matching category wins.
STATUS_BY_ERROR: tuple[tuple[type[AgentainerError], str], ...] = (
    (InvalidInput, falcon.HTTP_400),
    (Unauthorized, falcon.HTTP_401),
    (Forbidden, falcon.HTTP_403),
    (NotFound, falcon.HTTP_404),
    (Conflict, falcon.HTTP_409),
    (RangeNotSatisfiable, falcon.HTTP_416),
    (Misdirected, falcon.HTTP_421),
    (Unprocessable, falcon.HTTP_422),
    (TooManyRequests, falcon.HTTP_429),
    (Unavailable, falcon.HTTP_503),
    (InsufficientStorage, falcon.HTTP_507),
)

# Falcon's own errors (routing, media, params) get codes too.
CODE_BY_HTTP_ERROR: tuple[tuple[type[falcon.HTTPError], str], ...] = (
    (falcon.HTTPRouteNotFound, "route_not_found"),
    (falcon.HTTPMethodNotAllowed, "method_not_allowed"),
    (falcon.MediaNotFoundError, "missing_body"),
    (falcon.MediaMalformedError, "invalid_json"),
    (falcon.HTTPInvalidParam, "invalid_param"),
    (falcon.HTTPMissingParam, "missing_param"),
    (falcon.HTTPPayloadTooLarge, "body_too_large"),
    (falcon.HTTPUnsupportedMediaType, "unsupported_media_type"),
    (falcon.HTTPNotFound, "not_found"),
)


def status_of(error: AgentainerError) -> str:
    for category, status in STATUS_BY_ERROR:
        if isinstance(error, category):
            return status
    return falcon.HTTP_500


def handle_domain_error(req: falcon.Request, resp: falcon.Response,
                        ex: AgentainerError, params: dict) -> None:
    resp.status = status_of(ex)
    if isinstance(ex, Unauthorized):
        resp.set_header("WWW-Authenticate", "Bearer")
    if ex.retry_after is not None:
        resp.set_header("Retry-After", str(ex.retry_after))
    resp.media = failure(ex.message, ex.code)


def wsgi_reply(ex: AgentainerError, start_response: Callable) -> list[bytes]:
    """Answer a domain error from a WSGI wrapper, before the app (same status and body)."""
    headers = [("Content-Type", falcon.MEDIA_JSON)]
    if ex.retry_after is not None:
        headers.append(("Retry-After", str(ex.retry_after)))
    start_response(status_of(ex), headers)
    return [json.dumps(failure(ex.message, ex.code)).encode()]


def handle_unexpected(req: falcon.Request, resp: falcon.Response,
                      ex: Exception, params: dict) -> None:
    logger.exception("%s %s: unexpected error", req.method, req.path)
    resp.status = falcon.HTTP_500
    resp.media = failure("internal error; the server log has the details", "internal_error")


def serialize_http_error(req: falcon.Request, resp: falcon.Response,
                         ex: falcon.HTTPError) -> None:
    code = next((c for cls, c in CODE_BY_HTTP_ERROR if isinstance(ex, cls)), "http_error")
    message = ex.description or ex.title or "error"
    if isinstance(ex, falcon.HTTPRouteNotFound):
        message = f"no route for {req.method} {req.path}"
    resp.content_type = falcon.MEDIA_JSON
    resp.media = failure(message, code)


def register(app: falcon.App) -> None:
    """Install the handlers on ``app``."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(AgentainerError, handle_domain_error)
    app.set_error_serializer(serialize_http_error)
