"""Forwarding to agents' apps: header rules, pooled upstream connections, streaming relay.

PERF: this is the hot path. One pooled urllib3 connection per concurrent request and
agent, no per-request allocation beyond the header lists, and the response is relayed
chunk by chunk as the agent writes it; the journal capture is a bounded bytearray append.
"""

import logging
import time
from collections.abc import Callable, Iterator

import urllib3
from urllib3.connection import HTTPConnection
from urllib3.exceptions import ConnectTimeoutError, HTTPError, ProtocolError, ReadTimeoutError

from agentainer.journal import Journal

logger = logging.getLogger(__name__)

# RFC 9110 §7.6.1 connection-specific headers, plus the ones a proxy must not pass on.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authenticate", "proxy-authorization",
})
# APPSEC: kept out of the journal (replay happens without them; see README).
REDACTED = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"})
OWN_PREFIX = "x-agentainer-"
FORWARDED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "host"})
NOT_FORWARDED = HOP_BY_HOP | FORWARDED  # the client's headers the proxy drops or replaces
CHUNK = 64 * 1024
# NOTE: the lease is connect + read timeout + a 5 s grace from its last renewal; renewing on
# every chunk at least this long after the last renewal keeps it alive across any silence
# up to read_timeout, at one Redis call per stream every RENEW_EVERY seconds at most.
RENEW_EVERY = 2.0


class AgentDown(Exception):
    """Nothing reached the agent: connection refused, unreachable or timed out."""


class AgentFailed(Exception):
    """The agent took the request but failed before answering (reset, timeout)."""

    def __init__(self, message: str, *, timeout: bool) -> None:
        super().__init__(message)
        self.timeout = timeout


class StaleConnection(AgentFailed):
    """A kept-alive connection went unanswered: the agent closed it as it was reused."""


class _ClosedWhileIdle(ConnectionResetError):
    """Marks a reset or EOF, before any response byte, on a connection already answered."""


class _AgentConnection(HTTPConnection):
    """An upstream connection that tells a stale reused socket from a failed first request."""

    _answered = False

    def connect(self) -> None:
        super().connect()
        self._answered = False

    def getresponse(self) -> urllib3.HTTPResponse:  # type: ignore[override]
        try:
            response = super().getresponse()
        except ConnectionResetError as ex:  # NOTE: http.client's RemoteDisconnected too
            if self._answered:
                raise _ClosedWhileIdle(str(ex)) from ex
            raise
        self._answered = True
        return response


class _AgentPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _AgentConnection


def end_to_end(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Return the client's headers a proxy may pass on.

    Drops hop-by-hop headers (and those named in Connection), the client's
    ``X-Agentainer-*`` headers, ``Host`` and ``X-Forwarded-*`` (the proxy sets those).
    """
    named = {token.strip().lower() for name, value in headers if name.lower() == "connection"
             for token in value.split(",")}
    return [(name, value) for name, value in headers if _kept(name, named, NOT_FORWARDED)]


def forward_headers(headers: list[tuple[str, str]], *, client_ip: str, proto: str, host: str,
                    strip_authorization: bool) -> list[tuple[str, str]]:
    """Return the headers to send upstream: the end-to-end ones, without ``Authorization``
    when it carries an Agentainer token, plus ``X-Forwarded-For/Proto/Host``."""
    kept = [(name, value) for name, value in end_to_end(headers)
            if not (strip_authorization and name.lower() == "authorization")]
    kept += [("X-Forwarded-For", client_ip), ("X-Forwarded-Proto", proto),
             ("X-Forwarded-Host", host)]
    return kept


def stored_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Return the end-to-end headers to journal, secrets redacted, for replay."""
    return [(name, "[redacted]" if name.lower() in REDACTED else value)
            for name, value in end_to_end(headers)]


def replay_headers(stored: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Return journaled headers as they are sent on replay (redacted ones left out)."""
    return [(name, value) for name, value in stored if value != "[redacted]"]


def response_headers(headers: urllib3.HTTPHeaderDict) -> list[tuple[str, str]]:
    """Return the agent's response headers minus hop-by-hop and ``X-Agentainer-*`` ones.

    APPSEC: an agent cannot pass off its own request ID or replay flag as Agentainer's.
    """
    named = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    return [(name, value) for name, value in headers.iteritems()
            if _kept(name, named, HOP_BY_HOP)]


def _kept(name: str, named: set[str], dropped: frozenset[str]) -> bool:
    """Tell whether a header passes: not in ``dropped``, not named in Connection, not ours."""
    lower = name.lower()
    return not (lower in dropped or lower in named or lower.startswith(OWN_PREFIX))


class Upstream:
    """Pooled HTTP/1.1 connections to agents' apps (``route`` is ``ip:port``)."""

    def __init__(self, *, connect_timeout: float, read_timeout: float,
                 pool_size: int = 64) -> None:
        self._pool = urllib3.PoolManager(
            num_pools=512, maxsize=pool_size, block=False, retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout))
        self._pool.pool_classes_by_scheme = {"http": _AgentPool}

    def send(self, route: str, method: str, target: str, headers: list[tuple[str, str]],
             body: bytes, *, resend: bool = False) -> urllib3.BaseHTTPResponse:
        """Send a request and return the response with its body unread.

        Args:
            resend: the request may go out once more, on a new connection, when the
                kept-alive one it went out on turns out closed by the agent (an idempotent
                method, or a journaled request, which would be redelivered anyway).

        Raises:
            AgentDown: nothing was sent (the agent is down or unreachable).
            AgentFailed: the request was sent but no response came.
        """
        host, _, port = route.rpartition(":")
        # PERF: the route's pool directly; no URL to build and parse per request
        pool = self._pool.connection_from_host(host, int(port), scheme="http")
        try:
            return self._open(pool, route, method, target, headers, body)
        except StaleConnection:
            # NOTE: an agent closing an idle keep-alive connection races our reuse of it
            # (urllib3 only drops connections already seen closed when it hands them out).
            if not resend:
                raise
        logger.debug("agent at %s: closed a kept-alive connection; sending again", route)
        try:
            return self._open(pool, route, method, target, headers, body)
        except AgentDown as ex:  # NOTE: the first send may have reached the agent
            raise AgentFailed(f"the agent closed the connection and refuses new ones: {ex}",
                              timeout=False) from ex

    @staticmethod
    def _open(pool: urllib3.HTTPConnectionPool, route: str, method: str, target: str,
              headers: list[tuple[str, str]], body: bytes) -> urllib3.BaseHTTPResponse:
        try:
            return pool.urlopen(method, target, body=body or None, headers=dict(headers),
                                redirect=False, preload_content=False, decode_content=False,
                                assert_same_host=False, retries=False)
        except ConnectTimeoutError as ex:  # NOTE: also NewConnectionError (refused, no route)
            raise AgentDown(f"cannot connect to the agent at {route}: {ex}") from ex
        except ReadTimeoutError as ex:
            raise AgentFailed(f"the agent did not answer in time: {ex}", timeout=True) from ex
        except ProtocolError as ex:
            error = StaleConnection if isinstance(ex.args[-1], _ClosedWhileIdle) else AgentFailed
            raise error(f"the agent failed mid-request: {ex}", timeout=False) from ex
        except HTTPError as ex:
            raise AgentFailed(f"the agent failed mid-request: {ex}", timeout=False) from ex


class Capture:
    """The first ``limit`` bytes of a response, for the journal; ``truncated`` once more came.

    PERF: one bounded bytearray append per chunk.
    """

    __slots__ = ("data", "limit", "truncated")

    def __init__(self, limit: int) -> None:
        self.data = bytearray()
        self.limit = limit
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        if len(chunk) > room:
            self.truncated = True


class Relay:
    """Iterates over an agent's response as it arrives, teeing it into the journal.

    ``close()`` (called by the WSGI server at the end, or when the client goes away)
    releases the upstream connection and records the outcome exactly once. ``arrived`` is
    when the request arrived (before its lease was taken), on ``clock``; ``lease`` is the
    lease it holds (:attr:`Admission.lease`), which fences its renewals and its completion.
    """

    def __init__(self, upstream: urllib3.BaseHTTPResponse, *, journal: Journal | None,
                 request_id: str, capture_limit: int, on_failure: Callable[[str], None],
                 arrived: float, lease: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        now = clock()
        self._upstream = upstream
        self._latency = now - arrived
        self._journal = journal
        self._request_id = request_id
        self._lease = lease
        self._capture = Capture(capture_limit)
        self._on_failure = on_failure
        self._clock = clock
        self._renewed = arrived
        self._chunks = self._read()
        self._outcome: str | None = None
        if journal is not None:
            self._renew(now)  # NOTE: the answer's headers may have been long in coming

    def __iter__(self) -> "Relay":
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def _read(self) -> Iterator[bytes]:
        upstream = self._upstream
        try:
            while True:
                chunk = upstream.read1(CHUNK, decode_content=False)
                if not chunk:
                    break
                if self._journal is not None:
                    self._capture.add(chunk)
                    self._renew(self._clock())
                yield chunk
        except HTTPError as ex:
            self._finish("failed", f"the agent failed mid-response: {ex}")
            return
        self._finish("completed", "")

    def _renew(self, now: float) -> None:
        if now - self._renewed >= RENEW_EVERY:
            self._journal.renew(self._request_id, lease=self._lease)
            self._renewed = now

    def close(self) -> None:
        self._finish("completed", "client disconnected before the end of the response")
        self._chunks.close()

    def _finish(self, outcome: str, note: str) -> None:
        if self._outcome is not None:
            return
        self._outcome = outcome
        if outcome == "completed" and not note:
            self._upstream.release_conn()
        else:
            self._upstream.close()
            self._upstream.release_conn()
        if self._journal is None:
            return
        if outcome == "failed":
            self._on_failure(note)
            return
        self._journal.complete(self._request_id, status=self._upstream.status,
                               headers=response_headers(self._upstream.headers),
                               body=bytes(self._capture.data),
                               truncated=self._capture.truncated or bool(note), error=note,
                               latency=self._latency, lease=self._lease)
