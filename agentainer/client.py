"""The REST client the CLI uses (requests-based; the server's envelope unwrapped)."""

from collections.abc import Iterator
from typing import Any

import requests

from agentainer.status import ExitStatus

EXIT_BY_HTTP = {400: ExitStatus.ERROR, 401: ExitStatus.AUTH, 403: ExitStatus.AUTH,
                404: ExitStatus.NOT_FOUND, 409: ExitStatus.CONFLICT,
                503: ExitStatus.UNAVAILABLE}


class ApiError(Exception):
    """The server refused a request, or could not be reached (``status`` None)."""

    def __init__(self, message: str, *, status: int | None, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    @property
    def exit_status(self) -> ExitStatus:
        if self.status is None:
            return ExitStatus.UNAVAILABLE
        return EXIT_BY_HTTP.get(self.status, ExitStatus.ERROR)


class Client:
    """Calls the Agentainer API at ``url`` with a bearer ``token``."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 60.0,
                 session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._session = session or requests.Session()
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, *, body: Any = None,
             params: dict[str, Any] | None = None) -> tuple[str, Any]:
        """Return ``(message, data)`` of a successful reply.

        Raises:
            ApiError: an error reply, or no reply at all.
        """
        response = self._send(method, path, json=body, params=params,
                              timeout=(5.0, self._timeout))
        payload = self._payload(response)
        if not response.ok or not payload.get("success", False):
            raise ApiError(payload.get("message") or response.reason, status=response.status_code,
                           code=payload.get("error", "http_error"))
        return payload.get("message", ""), payload.get("data")

    def stream(self, path: str, params: dict[str, Any] | None = None) -> Iterator[bytes]:
        """Yield a streamed plain-text reply chunk by chunk, as the server sends it.

        Raises:
            ApiError: an error reply, no reply, or a reply cut off mid-stream.
        """
        response = self._send("GET", path, params=params, stream=True, timeout=(5.0, None))
        with response:
            if not response.ok:
                payload = self._payload(response)
                raise ApiError(payload.get("message") or response.reason,
                               status=response.status_code,
                               code=payload.get("error", "http_error"))
            try:
                yield from response.iter_content(chunk_size=None)
            except requests.RequestException as ex:
                raise ApiError(f"the stream from {self.url} broke off: the server or the "
                               "agent's container went away", status=None,
                               code="stream_interrupted") from ex

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self._session.request(method, self.url + path, **kwargs)
        except requests.ConnectionError as ex:
            raise ApiError(f"cannot reach the Agentainer server at {self.url}; is it running? "
                           "(make run)", status=None, code="unreachable") from ex
        except requests.Timeout as ex:
            raise ApiError(f"the server at {self.url} did not answer in time", status=None,
                           code="timeout") from ex

    @staticmethod
    def _payload(response: requests.Response) -> dict[str, Any]:
        try:
            payload = response.json()
        except ValueError:
            return {"message": response.text.strip()[:200] or response.reason}
        return payload if isinstance(payload, dict) else {}
