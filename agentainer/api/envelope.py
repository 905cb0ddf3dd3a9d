"""The reply envelope every JSON answer uses: ``{success, message, data | error}``."""

from typing import Any

import falcon


def ok(resp: falcon.Response, message: str, data: Any = None,
       status: str = falcon.HTTP_200) -> None:
    """Set a success reply."""
    resp.status = status
    body: dict[str, Any] = {"success": True, "message": message}
    if data is not None:
        body["data"] = data
    resp.media = body


def failure(message: str, code: str) -> dict[str, Any]:
    """Return the body of an error reply."""
    return {"success": False, "message": message, "error": code}
