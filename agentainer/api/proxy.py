"""The proxy sink: ``ANY /agent/{id-or-name}/{path}``, forwarded to the agent and journaled."""

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import falcon

from agentainer.api.envelope import failure, ok
from agentainer.errors import (
    AgentAtCapacity, AgentNotFound, AgentOverloaded, Conflict, InvalidInput, JournalFull,
    QueueFull, Unauthorized, Unavailable, Unprocessable,
)
from agentainer.api.following import Relayed, client_gone, pass_headers
from agentainer.api.hold import decide, parse_prefer
from agentainer.api.inflight import InflightLimit, Slots
from agentainer.journal.completions import Completions
from agentainer.journal.follow import Followed, ResponseFollower
from agentainer.journal.journal import (
    Admission, IncomingRequest, Journal, Outcome, Retry, Wait, new_request_id,
)
from agentainer.names import ID_RE
from agentainer.statuses import AgentStatus, RequestStatus
from agentainer.tokens import RESUME_TOKEN_HEADER, hash_token, resume_token
from agentainer.journal.upstream import (
    OWN_PREFIX, AgentDown, AgentFailed, AgentResponse, BadResponse, Relay, Upstream,
    forward_headers, relayable, stored_headers,
)

logger = logging.getLogger(__name__)

PATTERN = r"^/agent/(?P<agent_ref>[^/]+)(?P<rest>/.*)?\Z"
REQUEST_ID_HEADER = "X-Agentainer-Request-Id"
# NOTE: the WSGI environ key where the gateway listener puts the calling agent's ID
CALLER_ENV = "agentainer.caller"
RETRY_AFTER = "5"
# RFC 9110 §9.2.2: sending these twice has the effect of sending them once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
WAITING = {Wait.DOWN: "the agent is not running",
           Wait.BACKLOG: "the agent has requests queued before this one",
           Wait.BUSY: "the agent has its max_concurrency requests in flight"}
# NOTE: Falcon (app.py, _BODILESS_STATUS_CODES) answers these, and HEAD, with an empty
# body and never reads nor closes resp.stream; 1xx never gets here (see proxy.relayable).
BODILESS = frozenset({204, 304})


class _NotReached(Exception):
    """A journaled request reached nothing of its agent (:class:`AgentDown`)."""


@dataclass(frozen=True)
class _Arrival:
    """What the sink made of one request before admission."""

    request_id: str
    arrived: float                   # time.monotonic() on arrival
    target_path: str                 # the path to send the agent, as the client encoded it
    headers: list[tuple[str, str]]   # the client's headers, as sent
    admin: bool                      # it carries the admin token
    token_hash: str                  # its bearer token's hash ('' for none)
    incoming: IncomingRequest        # what the journal stores of it (the body included)


class ProxySink:
    """Forwards to the agent, or queues the request when the agent cannot take it."""

    def __init__(self, journal: Journal, completions: Completions, upstream: Upstream, *,
                 schedule: Callable[[str], None], on_down: Callable[[str], object],
                 wake: Callable[[str], object], admin_token: str, max_body: int,
                 capture_limit: int, inflight: InflightLimit, follower: ResponseFollower,
                 hold: float, holds: Slots) -> None:
        self._admin_hash = hash_token(admin_token)
        self._admin_token = admin_token  # NOTE: the key of the resume tokens it hands out
        self._journal = journal
        self._completions = completions
        self._upstream = upstream
        self._schedule = schedule
        self._on_down = on_down
        self._wake = wake
        self._max_body = max_body
        self._capture_limit = capture_limit
        self._inflight = inflight
        self._follower = follower
        self._hold = hold
        self._holds = holds

    def __call__(self, req: falcon.Request, resp: falcon.Response, **route: Any) -> None:
        """Proxy one request; ``route`` holds PATTERN's groups (``agent_ref``, ``rest``)."""
        agent_ref: str = route["agent_ref"]
        arrival = self._arrive(req, resp)
        admission = self._admit(agent_ref, arrival)
        if admission.outcome is Outcome.IDEMPOTENT:
            self._idempotent_reply(resp, admission, arrival.incoming)
        elif admission.outcome is Outcome.QUEUED:
            if admission.idle:
                self._wake_soon(admission.agent_id)
            elif admission.wait is not Wait.DOWN:
                # NOTE: queued behind a backlog or at max_concurrency: replay delivers it
                self._schedule(admission.agent_id)
            self._answer_queued(req, resp, admission, arrival.request_id, admission.position,
                                WAITING[admission.wait or Wait.DOWN])
        else:
            self._forward_within_limit(req, resp, agent_ref, admission, arrival)

    def _arrive(self, req: falcon.Request, resp: falcon.Response) -> _Arrival:
        """Name the request (answering with its ID), read its body and describe it."""
        arrived = time.monotonic()
        request_id = new_request_id()
        resp.set_header(REQUEST_ID_HEADER, request_id)
        body = self._read_body(req)
        # NOTE: the raw URI, so percent-encoding reaches the agent exactly as sent
        raw_path = req.env.get("REQUEST_URI", req.path).split("?", 1)[0]
        target_path = "/" + raw_path.split("/", 3)[3] if raw_path.count("/") >= 3 else "/"
        headers = _header_pairs(req)
        authorization = req.get_header("Authorization")
        token_hash = _bearer_hash(authorization)
        key = req.get_header("Idempotency-Key")
        admin = bool(token_hash) and hmac.compare_digest(token_hash, self._admin_hash)
        incoming = IncomingRequest(
            method=req.method, path=target_path, query=req.query_string,
            headers=stored_headers(headers), body=body,
            # APPSEC: the admin token is never journaled (an agent's token: see ADMIT)
            authorization="" if admin else authorization or "",
            idempotency_key=_idempotency_key(key, authorization,
                                             req.env.get(CALLER_ENV, "")),
            fingerprint=_fingerprint(req.method, target_path, req.query_string, body)
            if key else "")
        return _Arrival(request_id, arrived, target_path, headers, admin, token_hash,
                        incoming)

    def _admit(self, agent_ref: str, arrival: _Arrival) -> Admission:
        """Journal the request (or not) and return the admission, unless it is refused.

        Raises:
            AgentNotFound, Unauthorized, JournalFull, QueueFull: refused at admission.
            Unavailable: the agent journals nothing and is not running.
        """
        admission = self._journal.admit(agent_ref, by_id=bool(ID_RE.match(agent_ref)),
                                        token_hash=arrival.token_hash,
                                        request_id=arrival.request_id,
                                        request=arrival.incoming)
        outcome = admission.outcome
        if outcome is Outcome.MISSING:
            raise AgentNotFound(agent_ref)
        if outcome is Outcome.FORBIDDEN:
            raise Unauthorized("this agent is private: send its invoke token as "
                               "'Authorization: Bearer <token>'")
        if outcome is Outcome.OVER:
            raise JournalFull("the request journal is at its byte budget (journal_max_bytes); "
                              "retry later")
        if outcome is Outcome.FULL:
            raise QueueFull(agent_ref)
        if outcome is Outcome.BUSY:
            raise AgentAtCapacity(agent_ref)
        status = admission.agent_status
        if outcome is Outcome.DIRECT and status is not AgentStatus.RUNNING:
            raise Unavailable(f"agent {agent_ref} is {status} and does not journal requests "
                              "(--no-persist); retry later", code="agent_unavailable")
        return admission

    def _forward_within_limit(self, req: falcon.Request, resp: falcon.Response,
                              agent_ref: str, admission: Admission, arrival: _Arrival) -> None:
        """Forward while holding one of the agent's in-flight slots (until the answer's
        end), or queue the request instead when the agent has none free."""
        journaled = admission.journaled
        agent_id = admission.agent_id
        if not self._inflight.enter(agent_id):
            if not journaled:
                raise AgentOverloaded(agent_ref)
            # APPSEC: one slow agent cannot hold every proxy thread: the rest wait in its queue
            self._queue_instead(req, resp, admission, arrival.request_id, agent_ref,
                                f"{self._inflight.limit} requests already in flight to the "
                                "agent (agent_max_inflight)", "the agent is at its limit "
                                "of requests in flight")
            return
        try:
            relaying = self._forward(req, resp, agent_ref, admission, arrival)
        except _NotReached as ex:
            # NOTE: the slot is freed first: the request may be held a while in its queue
            self._inflight.leave(agent_id)
            self._queue_instead(req, resp, admission, arrival.request_id, agent_ref, str(ex),
                                "the agent is not running")
            return
        except Exception as ex:
            self._inflight.leave(agent_id)
            # NOTE: on QueueFull the journal took the record back already
            if journaled and not isinstance(ex, QueueFull):
                # NOTE: a failure of ours after admission: the failed-attempt rule ends the
                # record now, rather than a late redelivery when its lease expires (it is
                # fenced: a no-op when the record was ended already)
                self._requeue(arrival.request_id, agent_id, f"the proxy failed: {ex!r}",
                              admission.lease)
            raise
        if not relaying:  # NOTE: else the Relay frees the slot when the agent's answer ends
            self._inflight.leave(agent_id)

    def _forward(self, req: falcon.Request, resp: falcon.Response, agent_ref: str,
                 admission: Admission, arrival: _Arrival) -> bool:
        """Send the request to the running agent and relay its answer, or the failure;
        return whether a :class:`Relay` streams the answer (it frees the in-flight slot).

        Raises:
            _NotReached: a journaled request reached nothing: the agent is down.
        """
        journaled = admission.journaled
        request_id = arrival.request_id
        # APPSEC: no Agentainer token (admin or agent) ever reaches an agent
        strip = admission.strip_authorization or arrival.admin
        forwarded = forward_headers(
            arrival.headers, client_ip=req.remote_addr or "", proto=req.scheme, host=req.host,
            strip_authorization=strip)
        forwarded.append((REQUEST_ID_HEADER, request_id))
        target = arrival.target_path + (f"?{req.query_string}" if req.query_string else "")
        try:
            # NOTE: a journaled request that fails is redelivered anyway, so it may be resent
            upstream = self._upstream.send(
                admission.route, req.method, target, forwarded, arrival.incoming.body,
                resend=journaled or req.method in IDEMPOTENT_METHODS)
            passed = relayable(upstream)
        except AgentDown as ex:
            self._agent_down(admission.agent_id)
            if not journaled:
                raise Unavailable(f"agent {agent_ref} is not reachable; retry later",
                                  code="agent_unavailable") from ex
            raise _NotReached(str(ex)) from ex
        except BadResponse as ex:  # NOTE: the agent is up: no on_down
            if journaled:
                self._requeue(request_id, admission.agent_id, str(ex), admission.lease)
            _failed_reply(resp, falcon.HTTP_502, f"agent {agent_ref}: {ex}",
                          "agent_bad_response", request_id)
            return False
        except AgentFailed as ex:
            self._agent_down(admission.agent_id)
            if journaled:
                self._requeue(request_id, admission.agent_id, str(ex), admission.lease)
            _failed_reply(resp, falcon.HTTP_504 if ex.timeout else falcon.HTTP_502,
                          f"agent {agent_ref} failed: {ex}",
                          "agent_timeout" if ex.timeout else "agent_failed", request_id)
            return False
        return self._relay(req, resp, upstream, passed, admission, request_id, arrival.arrived)

    def _relay(self, req: falcon.Request, resp: falcon.Response,
               upstream: AgentResponse, passed: list[tuple[str, str]],
               admission: Admission, request_id: str, arrived: float) -> bool:
        """Answer with the agent's response: status, the headers passed on, and its body
        streamed as it arrives (and journaled, when the request is); return whether the
        body is streamed (not for HEAD, 204 and 304)."""
        journaled = admission.journaled
        relay = Relay(
            upstream, journal=self._journal if journaled else None,
            completions=self._completions, request_id=request_id,
            headers=passed, capture_limit=self._capture_limit, arrived=arrived,
            lease=admission.lease,
            on_failure=lambda note: self._requeue(request_id, admission.agent_id, note,
                                                  admission.lease),
            on_end=lambda: self._inflight.leave(admission.agent_id))
        resp.status = upstream.status
        for name, value in passed:
            resp.append_header(name, value)
        if journaled:
            self._resume_header(resp, request_id)
        if req.method == "HEAD" or upstream.status in BODILESS:
            relay.drain()  # NOTE: completes the record now, before the answer is sent
            return False
        resp.stream = relay
        return True

    def _wake_soon(self, agent_id: str) -> None:
        """Wake the agent the idle rule stopped or paused, on a thread of its own.

        PERF: the request does not wait for the start; its agent's drain delivers it. A
        burst of requests starts one wake (the others return at once: AgentService.wake).
        """
        threading.Thread(target=self._wake_quietly, args=(agent_id,), daemon=True,
                         name=f"wake-{agent_id}").start()

    def _wake_quietly(self, agent_id: str) -> None:
        try:
            self._wake(agent_id)
        except Exception:  # noqa: BLE001 - the next request tries again
            logger.exception("agent %s: wake failed", agent_id)

    def _agent_down(self, agent_id: str) -> None:
        """Record the unreachable agent's state now, so the next requests queue at once."""
        try:
            self._on_down(agent_id)
        except Unavailable as ex:  # NOTE: Docker is away too; the request queues anyway
            logger.warning("agent %s: not reachable: %s", agent_id, ex.message)

    def _read_body(self, req: falcon.Request) -> bytes:
        length = req.content_length
        if length is not None and length > self._max_body:
            raise falcon.HTTPPayloadTooLarge(
                description=f"request body over the {self._max_body}-byte limit")
        body = req.bounded_stream.read(self._max_body + 1)
        if len(body) > self._max_body:
            raise falcon.HTTPPayloadTooLarge(
                description=f"request body over the {self._max_body}-byte limit")
        return body

    def _requeue(self, request_id: str, agent_id: str, error: str, lease: int) -> None:
        """End a failed attempt: back to the queue (drained) or failed after max_attempts."""
        status, _ = self._journal.retry(request_id, error, lease=lease)
        logger.info("request %s: attempt on agent %s failed (%s); now %s", request_id,
                    agent_id, error, status)
        if status is Retry.QUEUED:
            self._schedule(agent_id)

    def _queue_instead(self, req: falcon.Request, resp: falcon.Response, admission: Admission,
                       request_id: str, agent_ref: str, error: str, why: str) -> None:
        """Send a forwarded request, not attempted, to its agent's queue; hold it or answer
        202 (:meth:`_answer_queued`).

        Raises:
            QueueFull: the queue has no room for it.
        """
        status, position = self._journal.retry(request_id, error, attempted=False,
                                                lease=admission.lease)
        if status is Retry.FULL:
            raise QueueFull(agent_ref)
        self._schedule(admission.agent_id)
        self._answer_queued(req, resp, admission, request_id, position, why)

    def _answer_queued(self, req: falcon.Request, resp: falcon.Response,
                       admission: Admission, request_id: str, position: int,
                       why: str) -> None:
        """Hold the connection for the agent's answer (see hold.py), or answer 202."""
        self._resume_header(resp, request_id)
        decision = decide(parse_prefer(req.get_header("Prefer")), admission, self._hold)
        held = decision.seconds > 0 and self._holds.enter()
        if decision.applied and (held or not decision.seconds):
            resp.set_header("Preference-Applied", decision.applied)
        if held:
            try:
                followed = self._follower.open(admission.agent_id, request_id,
                                               wait_until=time.monotonic() + decision.seconds)
            except BaseException:
                self._holds.leave()
                raise
            if followed is not None and followed.status is not None:
                self._send_held(req, resp, followed)
                return
            self._holds.leave()
            if followed is not None:  # NOTE: it ended, failed or cancelled, while held
                _failed_reply(resp, falcon.HTTP_502,
                              f"the request ended {followed.request_status} while held "
                              f"({followed.error}); see /agents/{admission.agent_id}"
                              f"/requests/{request_id}", "request_failed", request_id)
                return
            why += f"; it was held {decision.seconds:g} s"
        elif decision.seconds > 0:
            why += f"; {self._holds.limit} requests are held already (hold_limit)"
        resp.location = f"/agents/{admission.agent_id}/requests/{request_id}"
        ok(resp, f"{why}; the request is queued and will be delivered when it can be",
           {"request_id": request_id, "status": RequestStatus.QUEUED, "position": position},
           falcon.HTTP_202)

    def _send_held(self, req: falcon.Request, resp: falcon.Response,
                   followed: Followed) -> None:
        """Answer a held request with the response it followed, as it streams; its hold
        ends with the answer (at once for HEAD, 204 and 304, whose body Falcon never
        reads nor closes)."""
        pass_headers(resp, followed)
        body = Relayed(followed, client_gone(req), whole=True)
        if req.method == "HEAD" or followed.status in BODILESS:
            body.close()
            self._holds.leave()
        else:
            resp.stream = Releasing(body, self._holds.leave)

    def _resume_header(self, resp: falcon.Response, request_id: str) -> None:
        """Hand the caller the capability to read its own response again
        (GET /agents/{id}/requests/{rid}/response, api/responses.py)."""
        resp.set_header(RESUME_TOKEN_HEADER, resume_token(self._admin_token, request_id))

    def _idempotent_reply(self, resp: falcon.Response, admission: Admission,
                          incoming: IncomingRequest) -> None:
        resp.set_header(REQUEST_ID_HEADER, admission.request_id)
        if admission.fingerprint != incoming.fingerprint:
            raise Unprocessable("this Idempotency-Key was used with another method, path, "
                                "query or body", code="idempotency_mismatch")
        # NOTE: the same caller (keys are scoped by credential) may follow the earlier
        # request's response, in flight or not
        self._resume_header(resp, admission.request_id)
        status = admission.request_status
        if status is RequestStatus.IN_FLIGHT:  # NOTE: its answer may be on its way
            status = self._journal.settle(admission.request_id)
        if status is not RequestStatus.COMPLETED:
            raise Conflict(f"the request with this Idempotency-Key is {status}; "
                           f"see /agents/{admission.agent_id}/requests/{admission.request_id}",
                           code="idempotency_in_progress")
        record = self._journal.get(admission.agent_id, admission.request_id)
        if record.get("resp_truncated"):
            raise Conflict("the response to the request with this Idempotency-Key was not kept "
                           "whole (over capture_limit, or dropped after body_retention); see "
                           f"/agents/{admission.agent_id}/requests/{admission.request_id}",
                           code="idempotency_response_unavailable")
        resp.status = record["resp_status"]
        for name, value in record["resp_headers"]:
            # APPSEC: records captured before agents' X-Agentainer-* headers were dropped
            if name.lower() != "content-length" and not name.lower().startswith(OWN_PREFIX):
                resp.append_header(name, value)
        resp.set_header("X-Agentainer-Idempotent-Replay", "true")
        resp.data = record["resp_body"]


class Releasing:
    """A response iterable that calls ``release`` once the WSGI server closes it."""

    def __init__(self, body: Iterable[bytes], release: Callable[[], None]) -> None:
        self._body = body
        self._release = release

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)  # PERF: the server iterates the body itself, no extra hop

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._release()


def _failed_reply(resp: falcon.Response, status: str, message: str, code: str,
                  request_id: str) -> None:
    resp.status = status
    resp.media = {**failure(message, code), "data": {"request_id": request_id}}


def _header_pairs(req: falcon.Request) -> list[tuple[str, str]]:
    """Return the request's headers as (name, value) pairs, repeated ones kept apart."""
    pairs = []
    for key, value in req.env.items():
        if key.startswith("HTTP_"):
            pairs.append((key[5:].replace("_", "-").title(), value))
    if req.content_type:
        pairs.append(("Content-Type", req.content_type))
    return pairs  # NOTE: no Content-Length: the upstream client sets it from the body


def _bearer_hash(header: str | None) -> str:
    if not header or not header.lower().startswith("bearer "):
        return ""
    return hash_token(header[7:].strip())


def _idempotency_key(value: str | None, credential: str | None, caller: str) -> str:
    """Return the journal's key for a client's ``Idempotency-Key``: scoped by the caller's
    credential (its ``Authorization`` header, when it sends one) and, on the gateways, by
    the calling agent (``caller``, its ID).

    APPSEC: two callers that pick the same key never share a request, nor its response;
    agents calling without a token are told apart by the gateway, which knows them.
    NOTE: neither header holds a NUL (waitress refuses control characters), so the
    scopes cannot collide; a host caller's key is as before.
    """
    if not value:
        return ""
    if len(value) > 255:
        raise InvalidInput("Idempotency-Key is longer than 255 characters")
    scope = f"{credential or ''}\0{value}" + (f"\0{caller}" if caller else "")
    return hashlib.sha256(scope.encode()).hexdigest()


def _fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    """Return what binds an idempotency key to one request: method, path, query and body.

    PERF: computed only for requests that carry a key.
    """
    digest = hashlib.sha256(f"{method}\0{path}\0{query}\0".encode())
    digest.update(body)
    return digest.hexdigest()
