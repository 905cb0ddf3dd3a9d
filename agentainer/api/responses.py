"""GET /agents/{id}/requests/{rid}/response: a proxied response, read again or resumed.

The captured response is answered as the agent sent it (its status and headers), from the
journal once the request completed, or followed live while it is delivered
(journal/follow.py). ``Last-Event-ID: X`` resumes an event stream right after the event
with id X; ``Range: bytes=N-`` resumes any body after its first N bytes.

APPSEC: besides the admin token (and the agent's manage token), the request's own resume
token grants this route, for that request only: every journaled answer of the proxy
carries it (``X-Agentainer-Resume-Token``), so a caller, even of a private agent, can
resume its own response and no one else's. It is also accepted as ``?token=`` (an
EventSource cannot send headers): it grants one response, read-only.
"""

import re
import time
from collections.abc import Callable

import falcon

from agentainer import units
from agentainer.agents.service import AgentService
from agentainer.api.lifecycle import param
from agentainer.api.following import Relayed, client_gone, pass_headers
from agentainer.api.logs import FollowSlots
from agentainer.api.proxy import REQUEST_ID_HEADER, RETRY_AFTER, Releasing
from agentainer.errors import Conflict, Forbidden, RangeNotSatisfiable
from agentainer.journal.follow import TERMINAL, Followed, ResponseFollower
from agentainer.journal.journal import Journal
from agentainer.tokens import RESUME_TOKEN_HEADER, resume_matches

_RANGE = re.compile(r"bytes=([0-9]{1,18})-")
DEFAULT_WAIT, MAX_WAIT = 30.0, 300.0  # seconds a request waits for its response to start


class ResponseResource:
    """Answers a request's response; one not ended yet takes one of the process's
    :class:`FollowSlots` while it is read."""

    def __init__(self, agents: AgentService, journal: Journal, follower: ResponseFollower,
                 *, admin_token: str, follows: FollowSlots,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._agents = agents
        self._journal = journal
        self._follower = follower
        self._admin_token = admin_token
        self._follows = follows
        self._clock = clock

    def capability(self, req: falcon.Request, params: dict) -> bool:
        """Tell the auth middleware whether the request carries this request's resume
        token (then no bearer token is needed).

        Raises:
            Forbidden: a resume token for another request, and no bearer token that
                might grant the route instead (``resume_token_mismatch``).
        """
        token = req.get_header(RESUME_TOKEN_HEADER) or req.get_param("token")
        if not token:
            return False
        if resume_matches(token, self._admin_token, params.get("request_id", "")):
            return True
        if req.get_header("Authorization"):
            return False
        raise Forbidden("this resume token is for another request's response",
                        code="resume_token_mismatch")

    def on_get(self, req: falcon.Request, resp: falcon.Response, agent_id: str,
               request_id: str) -> None:
        offset, event_id = _position(req)
        wait = param(req, "wait", units.parse_duration)
        wait = DEFAULT_WAIT if wait is None else min(wait, MAX_WAIT)
        agent_id = self._agents.resolve(agent_id)
        progress = self._journal.progress(request_id)
        # APPSEC: a follow holds a worker thread while the response comes
        slot = progress is not None and progress[0] not in TERMINAL
        if slot:
            self._follows.take()
        try:
            followed = self._follower.open(agent_id, request_id, offset=offset or 0,
                                           last_event_id=event_id,
                                           wait_until=self._clock() + wait)
            stream = self._answer(req, resp, request_id, followed, ranged=offset is not None)
        except BaseException:
            if slot:
                self._follows.release()
            raise
        if stream is None:
            if slot:
                self._follows.release()
        else:
            resp.stream = Releasing(stream, self._follows.release) if slot else stream

    def _answer(self, req: falcon.Request, resp: falcon.Response, request_id: str,
                followed: Followed | None, *, ranged: bool) -> Relayed | None:
        """Set the answer; return the live stream to send, if it is one."""
        if followed is None:
            resp.set_header("Retry-After", RETRY_AFTER)
            raise Conflict(f"the response to {request_id} has not started yet; retry later "
                           "(or wait longer: ?wait=)", code="response_pending")
        if followed.status is None:
            raise Conflict(f"request {request_id} is {followed.request_status} and has no "
                           f"response: {followed.error or 'none was recorded'}",
                           code="response_unavailable")
        pass_headers(resp, followed)
        resp.set_header(REQUEST_ID_HEADER, request_id)
        resp.set_header("X-Agentainer-Request-Status", followed.request_status.value)
        resp.set_header("X-Agentainer-Response-Status", str(followed.status))
        resp.set_header("X-Agentainer-Response-Live", "true" if followed.live else "false")
        resp.set_header("X-Agentainer-Offset", str(followed.offset))
        # APPSEC: the agent's body, with its Content-Type, on the management API's origin:
        # never sniffed, and a page of it runs sandboxed (no script, no same-origin access)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Content-Security-Policy", "sandbox")
        if followed.live:
            return Relayed(followed, client_gone(req))
        body = b"".join(followed.chunks)
        kept = followed.offset + len(body)
        if followed.truncated:
            resp.set_header("X-Agentainer-Response-Truncated", "true")
        if ranged:
            if not body:
                raise RangeNotSatisfiable(f"the response to {request_id} has {kept} bytes; "
                                          f"nothing from offset {followed.offset}")
            resp.status = falcon.HTTP_206
            total = "*" if followed.truncated else str(kept)
            resp.set_header("Content-Range", f"bytes {followed.offset}-{kept - 1}/{total}")
        resp.data = body
        return None


def _position(req: falcon.Request) -> tuple[int | None, str | None]:
    """Return the asked position: an event id (``Last-Event-ID``) or a byte offset
    (``Range: bytes=N-``); at most one of them.

    NOTE: RFC 9110 §14.2 lets a server ignore Range, and has it ignore a range it does
    not understand: a Range beside a Last-Event-ID, and any Range but ``bytes=N-``, is
    ignored (the whole body is the answer); an empty Last-Event-ID is none (an
    EventSource sends none before its first id).
    """
    event_id = req.get_header("Last-Event-ID") or None
    header = req.get_header("Range")
    if event_id is not None or header is None:
        return None, event_id
    match = _RANGE.fullmatch(header.strip())
    return (int(match.group(1)) if match else None), None

