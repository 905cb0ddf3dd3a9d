"""The CLI's REST client (the server's envelope unwrapped), and how it finds server and token."""

import argparse
import ipaddress
import os
from collections.abc import Iterator, Mapping
from typing import Any

import requests
import urllib3

from agentainer import config as configuration, tokens
from agentainer.config import Config
from agentainer.errors import Forbidden, Unauthorized
from agentainer.exit_codes import ExitStatus

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
        if self.status == 403 and self.code != Forbidden.code:
            return ExitStatus.ERROR  # NOTE: a policy's refusal (volume_refused), not the token's
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

    def stream(self, path: str, params: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None) -> Iterator[bytes]:
        """Yield a streamed reply chunk by chunk, as the server sends it.

        Raises:
            ApiError: an error reply, no reply, or a reply cut off mid-stream.
        """
        response = self._send("GET", path, params=params, headers=headers, stream=True,
                              timeout=(5.0, None))
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


# NOTE: commands that work without an API token (/health is public; token reads a file).
TOKENLESS_COMMANDS = frozenset({"token", "version"})


def find_server(args: argparse.Namespace,
                environ: Mapping[str, str] = os.environ) -> tuple[str, str | None]:
    """Return the server URL and token: flags, then environment, then the conf file.

    APPSEC: the conf file's admin token (configured, or the token file) is the local
    server's; it is only sent to that server, never to another URL.

    Raises:
        Unauthorized: the URL is not the local server's and no token was given.
    """
    url, token = args.url or environ.get("AGENTAINER_URL"), args.token
    token = token or environ.get("AGENTAINER_TOKEN")
    if url and token:
        return url, token
    settings = configuration.load(environ=environ)
    local = local_url(settings)
    url = url or local
    if token:
        return url, token
    if is_local(url, settings):
        return url, settings.token or tokens.read(settings.token_path)
    if args.command in TOKENLESS_COMMANDS:
        return url, None
    raise Unauthorized(f"{url} is not the local server ({local}), so the local admin token is "
                       "not sent to it; set AGENTAINER_TOKEN or --token to a token of that "
                       "server", code="token_required")


def local_url(settings: Config) -> str:
    """Return the URL of the server the conf file describes."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host if ':' not in host else f'[{host}]'}:{settings.port}"


def is_local(url: str, settings: Config) -> bool:
    """Tell whether ``url`` is the local server: its port, on loopback or its own host.

    APPSEC: parsed as the HTTP client (requests, urllib3) parses it, so a URL that one
    parser reads as loopback and the other as elsewhere (``http://evil\\@127.0.0.1:8081``)
    never carries the local token away.
    """
    try:
        parts = urllib3.util.parse_url(url)
    except urllib3.exceptions.LocationParseError:
        return False
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme or "")
    host = (parts.host or "").strip("[]").lower()
    if port != settings.port or not host:
        return False
    if host == "localhost" or host == settings.host.lower():
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
