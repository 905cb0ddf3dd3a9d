"""Sending a followed response (journal/follow.py) to a client: the proxy's held answers
and ``GET .../response`` both do."""

from collections.abc import Callable

import falcon

from agentainer.journal.follow import Followed
from agentainer.journal.upstream import OWN_PREFIX
from agentainer.statuses import RequestStatus


class IncompleteAnswer(Exception):
    """A held answer ended short of the agent's: the server must cut the connection."""


def pass_headers(resp: falcon.Response, followed: Followed) -> None:
    """Set the followed response's status (it has one: it did not end without a response)
    and the agent's headers, but Content-Length (the body is re-framed) and any
    ``X-Agentainer-*``."""
    assert followed.status is not None
    resp.status = followed.status
    for name, value in followed.headers:
        lower = name.lower()
        if lower != "content-length" and not lower.startswith(OWN_PREFIX):
            resp.append_header(name, value)


class Relayed:
    """The followed body's chunks, without the idle ticks; it ends early when the client
    goes (``client_gone``, waitress's ``waitress.client_disconnected``).

    With ``whole``, a body that did not end as the agent's whole answer (the attempt
    failed or was taken back after bytes were sent, or the journal kept only
    ``capture_limit`` bytes of it) raises :class:`IncompleteAnswer` instead of ending, so
    waitress cuts the connection and the client cannot take it for the whole answer.
    """

    def __init__(self, followed: Followed, client_gone: Callable[[], bool], *,
                 whole: bool = False) -> None:
        self._followed = followed
        self._chunks = followed.chunks
        self._client_gone = client_gone
        self._whole = whole

    def __iter__(self) -> "Relayed":
        return self

    def __next__(self) -> bytes:
        for chunk in self._chunks:
            if chunk:
                return chunk
            if self._client_gone():
                raise StopIteration
        followed = self._followed
        if self._whole and (followed.truncated
                            or followed.ended != RequestStatus.COMPLETED.value):
            raise IncompleteAnswer(f"the answer ended short ({followed.ended or 'cut'}"
                                   f"{', over capture_limit' if followed.truncated else ''})")
        raise StopIteration

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def client_gone(req: falcon.Request) -> Callable[[], bool]:
    """Return waitress's check that the request's client went away (never, elsewhere)."""
    return req.env.get("waitress.client_disconnected", lambda: False)
