"""Forwarding to agents' apps: header rules, pooled upstream connections, streaming relay.

PERF: this is the hot path. One pooled, kept-alive HTTP/1.1 connection per concurrent
request and agent; a request goes out as one write of its head and body, its response's
head is parsed by http.client's status line and body framing with the fields read
directly (:class:`_FinalResponse`), and its body is relayed chunk by chunk as the agent
writes it; the journal capture is a bounded bytearray append. (urllib3's pool and
response around the same http.client took 325 µs of CPU per exchange, this 73 µs,
measured side by side.)
"""

import http.client
import logging
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Protocol

from agentainer.journal.completions import Completions
from agentainer.journal.journal import Answer, Journal
from agentainer.journal.live import LiveCapture
from agentainer.journal.redaction import REDACTED
from agentainer.statuses import RequestStatus
from agentainer.units import HEADER_NAME as _TOKEN

logger = logging.getLogger(__name__)

# RFC 9110 §7.6.1 connection-specific headers, plus the ones a proxy must not pass on.
# NOTE: a superset of waitress's ``task.hop_by_hop`` ("trailers" included), which its
# start_response refuses with a 500.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "proxy-authenticate", "proxy-authorization",
})
OWN_PREFIX = "x-agentainer-"
# APPSEC: the client's claims about where it came from; the proxy sets X-Forwarded-* itself.
# Besides the standard ones, the client-address headers of CDNs and load balancers that
# apps and libraries read (Rails' Client-IP, npm request-ip's list).
FORWARDED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "host",
                       "forwarded", "x-real-ip", "x-client-ip", "client-ip", "true-client-ip",
                       "cf-connecting-ip", "fastly-client-ip", "x-cluster-client-ip",
                       "x-forwarded", "forwarded-for", "x-appengine-user-ip",
                       "cf-pseudo-ipv4"})
NOT_FORWARDED = HOP_BY_HOP | FORWARDED  # the client's headers the proxy drops or replaces
CHUNK = 64 * 1024
# RFC 9110 §5.1 field names are tokens; §5.5 values hold no control character but HTAB
# (obs-text, 0x80-0xFF, passes: http.client decodes it as latin-1, waitress re-encodes it).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]").search
_LENGTH = re.compile(r"[0-9]+[ \t]*").fullmatch  # NOTE: http.client strips leading OWS
_NO_NAMES: frozenset[str] = frozenset()
_TARGET_BAD = re.compile(r"[\x00-\x20\x7f]").search
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # NOTE: Content-Length: 0 when empty
# APPSEC: a cookie's Domain attribute would share it with every *.localhost origin
_COOKIE_DOMAIN = re.compile(r";[ \t]*domain[ \t]*=[^;]*", re.IGNORECASE).sub
# NOTE: the lease is connect + read timeout + a 5 s grace from its last renewal; renewing on
# every chunk at least this long after the last renewal keeps it alive across any silence
# up to read_timeout, at one Redis call per stream every RENEW_EVERY seconds at most.
RENEW_EVERY = 2.0
# NOTE: seconds a failed attempt waits for its live capture to land before it is requeued
FAILED_FLUSH = 5.0
# NOTE: seconds the proxy reads on for a client that left (then the record ends truncated)
ABANDONED_READ = 600.0


class AgentDown(Exception):
    """Nothing reached the agent: connection refused, unreachable or timed out."""


class AgentFailed(Exception):
    """The agent took the request but failed before answering (reset, timeout)."""

    def __init__(self, message: str, *, timeout: bool) -> None:
        super().__init__(message)
        self.timeout = timeout


class StaleConnection(AgentFailed):
    """A kept-alive connection went unanswered: the agent closed it as it was reused."""


class BadResponse(AgentFailed):
    """The agent answered with a response the proxy cannot pass on (see :func:`relayable`).

    It counts as a failed attempt: the request is queued again (or failed).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, timeout=False)


class BrokenResponse(AgentFailed):
    """The agent's response broke off mid-body, or went silent for ``read_timeout``."""


class _FinalResponse(http.client.HTTPResponse):
    """http.client's response, reading past every interim answer to the final one, with
    its headers parsed as HTTP fields rather than as an email.

    http.client skips only ``100 Continue``: it would take a ``102 Processing`` or a
    ``103 Early Hints`` for the answer, and read the real one as the next request's on
    the kept-alive connection. ``101`` is final (the proxy cannot pass it on).

    PERF: http.client hands the header block to the email package's feed parser (a
    tenth of the proxy's CPU per request, profiled); :func:`_header_fields` fills the same
    :class:`http.client.HTTPMessage` line by line.
    """

    def _read_status(self) -> tuple[str, int, str]:
        while True:
            # NOTE: typeshed's stub leaves out http.client's private _read_status (and
            # _read_headers below), which this overrides
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if not 100 <= status < 200 or status == 101:
                return version, status, reason
            # NOTE: the interim answer's headers (e.g. Early Hints' Link) are not relayed:
            # WSGI has no way to send an interim response
            http.client._read_headers(self.fp)  # type: ignore[attr-defined]

    def begin(self) -> None:
        """Read the status line and the headers, and find how the body is framed (RFC 9112
        §6), as http.client's ``begin`` does."""
        if self.headers is not None:
            return
        version, self.status, reason = self._read_status()
        self.code, self.reason = self.status, reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = _header_fields(http.client._read_headers(self.fp))
        coding = self.headers.get("transfer-encoding")
        self.chunked = bool(coding) and coding.lower() == "chunked"
        self.chunk_left = None
        self.will_close = self._check_close()
        length = (self.headers.get("content-length") or "").strip(" \t")
        # NOTE: a length that is not one decimal number is refused later (response_headers)
        self.length = (int(length) if not self.chunked and length.isdigit()
                       and length.isascii() else None)
        if self.status in (204, 304) or self._method == "HEAD":
            # NOTE: no body whatever Transfer-Encoding says (RFC 9112 §6.3; 304 and HEAD may
            # carry it); http.client would wait for chunks anyway
            self.length, self.chunked = 0, False
        if self.length is None and not self.chunked:
            self.will_close = True  # NOTE: the body runs to the connection's close


def _header_fields(lines: list[bytes]) -> http.client.HTTPMessage:
    """Return the header block's fields (latin-1, as http.client decodes them).

    A folded line (obs-fold) stays in its field's value with its line break, as the email
    parser kept it, so :func:`response_headers` refuses it as a control character.

    Raises:
        BadResponse: a line with no colon.
    """
    message = http.client.HTTPMessage()
    field: list[str] = []
    for raw in lines:
        line = raw.decode("iso-8859-1")
        if line in ("\r\n", "\n", ""):
            break
        if line[0] in " \t" and field:
            field.append(line)
            continue
        if field:
            message[field[0]] = "".join(field[1:]).rstrip("\r\n")
        name, colon, value = line.partition(":")
        if not colon:
            raise BadResponse(f"the agent sent a header line with no colon ({line[:100]!r}); "
                              "the proxy cannot pass on the response")
        field = [name, value.lstrip(" \t")]
    if field:
        message[field[0]] = "".join(field[1:]).rstrip("\r\n")
    return message


def end_to_end(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Return the client's headers a proxy may pass on.

    Drops hop-by-hop headers (and those named in Connection), the client's
    ``X-Agentainer-*`` headers, and :data:`FORWARDED`: ``Host``, ``X-Forwarded-*`` (the
    proxy sets those) and the other headers that claim a client's address.
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
    """Return the end-to-end headers to journal as sent, but ``Authorization``.

    The journal keeps ``Authorization`` apart (:attr:`IncomingRequest.authorization`), as
    it may carry an Agentainer token, which is never journaled nor sent to an agent.
    """
    return [(name, value) for name, value in end_to_end(headers)
            if name.lower() != "authorization"]


def replay_headers(stored: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Return journaled headers as they are sent on replay.

    NOTE: records journaled before the journal kept secrets (earlier 0.1.0 builds) hold
    ``[redacted]`` in place of secrets; those headers are left out rather than sent so.
    """
    return [(name, value) for name, value in stored if value != REDACTED]


class HeaderFields(Protocol):
    """Header fields in the order received, repeated ones apart (an HTTPMessage)."""

    def items(self) -> Iterable[tuple[str, str]]: ...


def response_headers(headers: HeaderFields) -> list[tuple[str, str]]:
    """Return the agent's response headers to pass on (and journal).

    Dropped: hop-by-hop headers (RFC 9110's and waitress's) and those named in
    ``Connection``; the agent's ``X-Agentainer-*`` headers; ``Content-Length`` when the
    response has ``Transfer-Encoding``, which overrides it (RFC 9112 §6.3: a proxy drops
    it; waitress frames the relayed body afresh). ``Set-Cookie`` loses its ``Domain``
    attribute, so each cookie stays on the origin that set it.

    Raises:
        BadResponse: a header the proxy cannot pass on: a name that is not a token, a
            value with a control character but HTAB (CR, LF, NUL...), or a
            ``Content-Length`` that is not one decimal number (signed, non-numeric, a
            list, a second one: RFC 9112 §6.3 has a proxy answer 502 to it). Waitress's
            start_response refuses several of these (a 500 otherwise).

    APPSEC: an agent cannot pass off its own request ID or replay flag as Agentainer's,
    nor split or smuggle a response to the client with a line break or a bad length,
    nor set a cookie for ``localhost`` or another agent's ``<name>.localhost`` origin.
    """
    fields = [(name, name.lower(), value) for name, value in headers.items()]
    # PERF: most answers name nothing in Connection: no set built for them
    named = {token.strip().lower() for _, lower, value in fields if lower == "connection"
             for token in value.split(",")} or _NO_NAMES
    reframed = any(lower == "transfer-encoding" for _, lower, _ in fields)
    kept = []
    # PERF: two compiled-regex matches per header passed on; the usual answer has a handful
    has_length = False
    for name, lower, value in fields:
        if lower in HOP_BY_HOP or lower in named or lower.startswith(OWN_PREFIX):
            continue
        if not _TOKEN(name):
            raise BadResponse(f"the agent sent a header named {name[:100]!r}, which is not "
                              "a valid name; the proxy cannot pass on the response")
        if _CONTROL(value):
            raise BadResponse(f"the agent's header {name!r} has a control character (CR, "
                              "LF, NUL...) in its value; the proxy cannot pass on the response")
        if lower == "content-length":
            if reframed:
                continue
            if has_length or not _LENGTH(value):
                raise BadResponse(f"the agent sent Content-Length {value[:100]!r}"
                                  f"{' twice' if has_length else ''}, not one decimal number; "
                                  "the proxy cannot pass on the response")
            has_length = True
        elif lower == "set-cookie":
            value = _COOKIE_DOMAIN("", value)
        kept.append((name, value))
    return kept


def relayable(response: "AgentResponse") -> list[tuple[str, str]]:
    """Return the headers to pass on of the agent's response (see :func:`response_headers`).

    Raises:
        BadResponse: the proxy cannot pass the response on: a final ``101`` (the proxy
            strips ``Upgrade``, so it never tunnels a switched protocol), or a header as
            above. The response is closed, its connection not reused.
    """
    try:
        if response.status < 200:
            raise BadResponse(f"the agent answered {response.status}: the proxy does not "
                              "switch protocols and cannot pass on the response")
        return response_headers(response.headers)
    except BadResponse:
        # NOTE: what follows on the connection (framing, protocol) cannot be trusted
        response.close()
        response.release_conn()
        raise


def _kept(name: str, named: set[str], dropped: frozenset[str]) -> bool:
    """Tell whether a header passes: not in ``dropped``, not named in Connection, not ours."""
    lower = name.lower()
    return not (lower in dropped or lower in named or lower.startswith(OWN_PREFIX))


class AgentResponse:
    """An agent's response with its body unread: :meth:`read1` it as it arrives, then
    :meth:`release_conn` (the connection goes back to its pool when the body was read to
    its end on a connection the agent keeps alive), or :meth:`close` it."""

    __slots__ = ("status", "headers", "_raw", "_connection", "_pools", "_route")

    def __init__(self, raw: "_FinalResponse", connection: socket.socket, pools: "_Pools",
                 route: str) -> None:
        self.status: int = raw.status
        self.headers: http.client.HTTPMessage = raw.msg
        self._raw = raw
        self._connection: socket.socket | None = connection
        self._pools = pools
        self._route = route

    @property
    def length_remaining(self) -> int | None:
        """The body's bytes still to come when its length is known (0 at its end)."""
        return self._raw.length

    def read1(self, amount: int) -> bytes:
        """Return what has arrived of the body, up to ``amount`` bytes (b"" at its end).

        Raises:
            BrokenResponse: it broke off, or nothing came for ``read_timeout``.
        """
        try:
            return self._raw.read1(amount)
        except TimeoutError as ex:
            raise BrokenResponse(f"the agent went silent mid-response: {ex}",
                                 timeout=True) from ex
        except (http.client.HTTPException, OSError, ValueError) as ex:
            raise BrokenResponse(f"the agent's response broke off: {ex!r}",
                                 timeout=False) from ex

    def release_conn(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        raw = self._raw
        if not raw.will_close and (raw.isclosed() or raw.length == 0):
            self._pools.give(self._route, connection)
        else:  # NOTE: the body was not read to its end: what follows is not a response
            raw.close()
            connection.close()

    def close(self) -> None:
        self._raw.close()
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class _Pools:
    """Idle kept-alive connections, per route, the last returned reused first.

    At most ``size`` idle connections per route and :data:`MAX_ROUTES` routes (routes
    change as agents restart: the oldest route's connections are closed past that).
    """

    MAX_ROUTES = 512

    def __init__(self, size: int) -> None:
        self._size = size
        self._idle: dict[str, list[socket.socket]] = {}
        self._lock = threading.Lock()

    def take(self, route: str) -> socket.socket | None:
        """Return an idle connection to ``route`` the agent has not closed, or None."""
        while True:
            with self._lock:
                idle = self._idle.get(route)
                if not idle:
                    return None
                connection = idle.pop()
            if not _readable(connection):  # NOTE: readable while idle: closed, or garbage
                return connection
            connection.close()

    def give(self, route: str, connection: socket.socket) -> None:
        with self._lock:
            idle = self._idle.get(route)
            if idle is None:
                if len(self._idle) >= self.MAX_ROUTES:
                    for stale in self._idle.pop(next(iter(self._idle))):
                        stale.close()
                idle = self._idle[route] = []
            if len(idle) < self._size:
                idle.append(connection)
                return
        connection.close()


def _readable(connection: socket.socket) -> bool:
    """Tell whether an idle connection has something to read: its close, or stray bytes.

    NOTE: poll(), not select(): descriptors past 1,024 are usual here.
    """
    poller = select.poll()
    poller.register(connection, select.POLLIN)
    return bool(poller.poll(0))


class Upstream:
    """Pooled HTTP/1.1 connections to agents' apps (``route`` is ``ip:port``)."""

    def __init__(self, *, connect_timeout: float, read_timeout: float,
                 pool_size: int = 64) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._pools = _Pools(pool_size)

    def send(self, route: str, method: str, target: str, headers: list[tuple[str, str]],
             body: bytes, *, resend: bool = False) -> AgentResponse:
        """Send a request and return the response with its body unread.

        Args:
            resend: the request may go out once more, on a new connection, when the
                kept-alive one it went out on turns out closed by the agent (an idempotent
                method, or a journaled request, which would be redelivered anyway).

        Raises:
            AgentDown: nothing was sent (the agent is down or unreachable).
            AgentFailed: the request was sent but no response came (BadResponse: one
                came that the proxy cannot read).
            ValueError: a header or the target holds what HTTP/1.1 cannot carry.
        """
        head = _request_head(method, target, route, headers, body)
        try:
            return self._open(route, method, head, body)
        except StaleConnection:
            # NOTE: an agent closing an idle keep-alive connection races our reuse of it
            # (the pool only drops connections already seen closed when it hands them out).
            if not resend:
                raise
        logger.debug("agent at %s: closed a kept-alive connection; sending again", route)
        try:
            return self._open(route, method, head, body, fresh=True)
        except AgentDown as ex:  # NOTE: the first send may have reached the agent
            raise AgentFailed(f"the agent closed the connection and refuses new ones: {ex}",
                              timeout=False) from ex

    def _open(self, route: str, method: str, head: bytes, body: bytes, *,
              fresh: bool = False) -> AgentResponse:
        connection = None if fresh else self._pools.take(route)
        reused = connection is not None
        if connection is None:
            connection = self._connect(route)
        try:
            # PERF: one write for the head and a small body
            if len(body) <= CHUNK:
                connection.sendall(head + body)
            else:
                connection.sendall(head)
                connection.sendall(body)
            raw = _FinalResponse(connection, method=method)
            raw.begin()
        except BadResponse:
            connection.close()
            raise
        except TimeoutError as ex:
            connection.close()
            raise AgentFailed(f"the agent did not answer in time: {ex}", timeout=True) from ex
        except (ConnectionResetError, BrokenPipeError) as ex:  # NOTE: RemoteDisconnected too
            connection.close()
            error = StaleConnection if reused else AgentFailed
            raise error(f"the agent failed mid-request: {ex!r}", timeout=False) from ex
        except (http.client.HTTPException, OSError, ValueError) as ex:
            connection.close()
            raise AgentFailed(f"the agent failed mid-request: {ex!r}", timeout=False) from ex
        return AgentResponse(raw, connection, self._pools, route)

    def _connect(self, route: str) -> socket.socket:
        host, _, port = route.rpartition(":")
        try:
            connection = socket.create_connection((host, int(port)),
                                                  timeout=self._connect_timeout)
        except OSError as ex:  # NOTE: refused, no route, or the connect timed out
            raise AgentDown(f"cannot connect to the agent at {route}: {ex}") from ex
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.settimeout(self._read_timeout)
        return connection


def _request_head(method: str, target: str, route: str, headers: list[tuple[str, str]],
                  body: bytes) -> bytes:
    """Return the request line and header block, with ``Host`` (the route) and, with a
    body or for a method that expects one, ``Content-Length``.

    Raises:
        ValueError: a name that is not a token, a value or a target with a control
            character (CR, LF, NUL...), or text that is not latin-1.
    """
    if _TARGET_BAD(target) or _CONTROL("\t".join(value for _, value in headers)):
        raise ValueError("a header value or the target holds a control character")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {route}"]
    for name, value in headers:
        if not _TOKEN(name):
            raise ValueError(f"{name[:100]!r} is not a header name")
        lines.append(f"{name}: {value}")
    if body or method in _BODY_METHODS:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


class Capture:
    """The first ``limit`` bytes of a response, for the journal; ``truncated`` once more came,
    ``size`` the bytes seen, kept or not.

    PERF: one bounded bytearray append per chunk.
    """

    __slots__ = ("data", "limit", "truncated", "size")

    def __init__(self, limit: int) -> None:
        self.data = bytearray()
        self.limit = limit
        self.truncated = False
        self.size = 0

    def add(self, chunk: bytes) -> bytes:
        """Keep what fits of ``chunk``; return that part."""
        self.size += len(chunk)
        room = self.limit - len(self.data)
        kept = chunk[:room] if room > 0 else b""  # PERF: the chunk itself when it fits
        self.data += kept
        if len(chunk) > room:
            self.truncated = True
        return kept


class Renewal:
    """Paces lease renewals: one is due :data:`RENEW_EVERY` seconds after the last."""

    __slots__ = ("last",)

    def __init__(self, last: float = float("-inf")) -> None:
        self.last = last

    def due(self, now: float) -> bool:
        """Tell whether a renewal is due at ``now``; if so, count it as made then."""
        if now - self.last < RENEW_EVERY:
            return False
        self.last = now
        return True


def read_captured(response: "AgentResponse", capture: Capture | None,
                  keep: Callable[[], None], live: LiveCapture | None = None
                  ) -> Iterator[bytes]:
    """Yield the response's body as it arrives, in reads of up to :data:`CHUNK` bytes.

    With a ``capture`` (the response is journaled), each chunk is added to it, published
    to the ``live`` capture (before it is yielded: whoever got a byte can resume after
    it), and then ``keep`` is called, to renew what the reader holds when a renewal is
    due (:class:`Renewal`). The proxy's :class:`Relay` and replay's drain both read so.

    Raises:
        BrokenResponse: the response broke off or went silent for the read timeout.
    """
    while chunk := response.read1(CHUNK):
        if capture is not None:
            kept = capture.add(chunk)
            if live is not None:
                live.add(kept, cut=capture.truncated, left=response.length_remaining)
            keep()
        yield chunk


class Relay:
    """Iterates over an agent's response as it arrives, teeing it into the journal.

    The outcome is recorded exactly once: ``completed`` when the body has been read to
    its end, ``failed`` (``on_failure``, the failed-attempt rule) when the agent broke
    off. A journaled response is also published to its live capture (:mod:`.live`) as it
    arrives, so that it can be followed and resumed (:mod:`.follow`).

    ``close()`` (called by the WSGI server at the end, or when the client goes away)
    before the end does not cut the agent off: a background thread reads the rest of a
    journaled response, capturing and publishing it, and records it as it ends (a direct
    one's connection is closed). ``on_end`` is called once the response is over: from
    ``close()``, or when that background read ends (the proxy frees the agent's in-flight
    slot then: the agent is busy until its answer ends). A response the WSGI server never
    iterates nor closes (Falcon answers HEAD, 204 and 304 with no body) is recorded by
    :meth:`drain` (``on_end`` is not called then).

    ``headers`` are the ones passed on (:func:`relayable`), journaled as such; a journaled
    (``journal``) response's answer goes to ``completions``, which records it off this
    thread. ``arrived`` is when the request arrived (before its lease was taken), on ``clock``;
    ``lease`` is the lease it holds (:attr:`Admission.lease`), which fences its renewals
    and its completion.
    """

    def __init__(self, upstream: "AgentResponse", *, journal: Journal | None,
                 completions: Completions, request_id: str,
                 headers: list[tuple[str, str]], capture_limit: int,
                 on_failure: Callable[[str], None], arrived: float, lease: int,
                 on_end: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        now = clock()
        self._upstream = upstream
        self._headers = headers
        self._latency = now - arrived
        self._journal = journal
        self._completions = completions
        self._request_id = request_id
        self._lease = lease
        self._capture = Capture(capture_limit)
        self._live = None if journal is None else journal.live(
            request_id, lease=lease, status=upstream.status, headers=headers,
            sink=completions.submit)
        self._on_failure = on_failure
        self._on_end = on_end
        self._clock = clock
        self._renewal = Renewal(arrived)
        self._chunks = self._read()
        self._outcome: RequestStatus | None = None
        self._abandoned = False
        self._renew(now)  # NOTE: the answer's headers may have been long in coming

    def __iter__(self) -> "Relay":
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def drain(self) -> None:
        """Read the response to its end without relaying it, and record the outcome.

        For the answers that have no body (HEAD, 204, 304): a single read, that returns
        at once, finds the end.
        """
        for _ in self._chunks:
            pass

    def _read(self) -> Generator[bytes, None, None]:
        try:
            capture = self._capture if self._journal is not None else None
            yield from read_captured(self._upstream, capture, self._keep, self._live)
        except BrokenResponse as ex:
            self._finish(RequestStatus.FAILED, f"the agent failed mid-response: {ex}")
            return
        self._finish(RequestStatus.COMPLETED, "")

    def _keep(self) -> None:
        self._renew(self._clock())

    def _renew(self, now: float) -> None:
        """Renew the lease when a renewal is due (a journaled request's only)."""
        if self._journal is not None and self._renewal.due(now):
            self._journal.renew(self._request_id, lease=self._lease)

    def close(self) -> None:
        if self._outcome is not None or self._journal is None:
            # NOTE: a direct answer's client went: its connection is closed (a note)
            self._finish(RequestStatus.COMPLETED, "the client went")
            self._chunks.close()
            self._on_end()
            return
        # NOTE: one daemon thread per abandoned response, which ends at the agent's end
        # or read timeout (the slot it keeps counts against agent_max_inflight)
        self._abandoned = True
        threading.Thread(target=self._read_abandoned, name=f"relay-{self._request_id}",
                         daemon=True).start()

    def _read_abandoned(self) -> None:
        """Read, capture and record the rest of a response its client left.

        NOTE: bounded: past ``capture_limit`` nothing more could be resumed, and an endless
        stream would hold its lease, its slots and this thread for good; so the read stops
        there, or after :data:`ABANDONED_READ` seconds, and the record ends completed and
        truncated, with a note.
        """
        deadline = self._clock() + ABANDONED_READ
        try:
            for _ in self._chunks:
                if self._capture.truncated or self._clock() > deadline:
                    self._finish(RequestStatus.COMPLETED, "the client disconnected before the "
                                 "end; the proxy read on up to "
                                 + ("capture_limit" if self._capture.truncated else
                                    f"{ABANDONED_READ:g} s") + ", then stopped")
                    self._chunks.close()
                    break
        except Exception:  # noqa: BLE001 - a thread of its own: nobody else would log it
            logger.exception("request %s: reading the rest of the response failed",
                             self._request_id)
        finally:
            if self._outcome is None:
                # NOTE: the read broke off on an error of ours (Redis), here or before the
                # client went: the record is left to its lease (a redelivery)
                self._upstream.close()
                self._upstream.release_conn()
            self._on_end()

    def _finish(self, outcome: RequestStatus, note: str) -> None:
        if self._outcome is not None:
            return
        self._outcome = outcome
        if outcome is RequestStatus.COMPLETED and not note:
            self._upstream.release_conn()
        else:
            self._upstream.close()
            self._upstream.release_conn()
        if self._journal is None:
            return
        assert self._live is not None
        self._live.end(outcome.value, self._capture.size)
        if outcome is RequestStatus.FAILED:
            # NOTE: this attempt's live capture lands before the request can be leased
            # again, so a follower never reads its chunks as the next attempt's
            self._completions.flush(FAILED_FLUSH)
            self._on_failure(note)
            return
        cut = bool(note) and self._abandoned  # NOTE: the read stopped early (see above)
        if self._abandoned and not note:
            note = "the client disconnected before the end; the proxy read the rest"
        # PERF: recorded off this thread (completions.py): the client need not wait for it
        self._completions.submit(Answer(
            self._request_id, self._lease, self._upstream.status, self._headers,
            bytes(self._capture.data), self._capture.truncated or cut, note,
            latency=self._latency))
