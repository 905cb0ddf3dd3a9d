"""One delivery attempt of a webhook event: the RQ job :data:`~outbox.DELIVER_JOB`.

The job POSTs the event's JSON body, signed (:mod:`agentainer.webhooks.signing`), to the
agent's webhook with a timeout of ``webhook_timeout`` in all. A 2xx answer delivers it;
anything else (another status, a refused connection, a timeout) is a failed attempt, and
the next one is due after :func:`agentainer.backoff.backoff` (``webhook_retry_base``
doubling to ``webhook_retry_cap``, jittered) until ``webhook_attempts`` are used: its
delay is kept in Redis (the ``webhook_due`` ZSET, see :mod:`agentainer.webhooks.outbox`),
not in a process, so the workers need no RQ scheduler and a restart forgets nothing.

APPSEC: no redirect is followed and no response body is read or stored (only the status
code): a webhook URL, which the admin sets, can make the host send a POST but never reads
anything back through Agentainer.
"""

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import urllib3
from urllib3.exceptions import HTTPError

from agentainer import __version__
from agentainer.agents.store import AgentStore
from agentainer.backoff import backoff
from agentainer.errors import AgentNotFound
from agentainer.webhooks import signing
from agentainer.webhooks.outbox import Attempt, Webhooks

logger = logging.getLogger(__name__)

MAX_ERROR = 300  # NOTE: characters of a failed attempt's error kept in its record


@dataclass
class Deliverer:
    """Makes one delivery attempt per job (the body of the ``deliver`` job)."""

    webhooks: Webhooks
    store: AgentStore
    attempts: int      # webhook_attempts
    retry_base: float  # webhook_retry_base
    retry_cap: float   # webhook_retry_cap
    timeout: float     # webhook_timeout
    clock: Callable[[], float] = time.time
    rand: Callable[[], float] = random.random

    def __post_init__(self) -> None:
        self._http = urllib3.PoolManager(num_pools=16, retries=False)

    def run(self, event_id: str, dispatch: int) -> str:
        """The RQ job: attempt the event under hand-out ``dispatch``; return the delivery's
        status after it (``stale``, doing nothing, if the hand-out is not current)."""
        attempt = self.webhooks.start(event_id, dispatch)
        if attempt is None:
            return "stale"
        try:
            spec = self.store.get(attempt.agent_id).spec
        except AgentNotFound:
            return "stale"  # NOTE: removed meanwhile; the removal deletes the record
        # NOTE: only an agent deployed with a webhook (and so a secret) has events
        assert spec.webhook and spec.webhook_secret
        status, error = self._post(spec.webhook, spec.webhook_secret, attempt,
                                   attempt.body(spec.name))
        ok = status is not None and 200 <= status < 300
        outcome = self.webhooks.finish(
            attempt, ok=ok, status=status, error=error, max_attempts=self.attempts,
            retry_in=backoff(attempt.attempts + 1, base=self.retry_base, cap=self.retry_cap,
                             rand=self.rand))
        log = logger.info if ok else logger.warning
        log("agent %s: webhook %s (%s) attempt %d: %s; %s", attempt.agent_id, attempt.id,
            attempt.type, attempt.attempts + 1, error or status, outcome)
        return outcome

    def _post(self, url: str, secret: str, attempt: Attempt, body: bytes
              ) -> tuple[int | None, str]:
        """POST one attempt; return its status code (None if none came) and an error."""
        headers = {"Content-Type": "application/json",
                   "User-Agent": f"Agentainer-Webhooks/{__version__}",
                   **signing.headers(secret, attempt.id, int(self.clock()), body)}
        try:
            response = self._http.request(
                "POST", url, body=body, headers=headers, redirect=False,
                timeout=urllib3.Timeout(total=self.timeout), preload_content=False)
        except HTTPError as ex:
            return None, _without_target(str(ex), url)[:MAX_ERROR]
        response.close()  # NOTE: the body is never read (APPSEC above)
        return response.status, "" if 200 <= response.status < 300 else \
            f"HTTP {response.status}"


def _without_target(message: str, url: str) -> str:
    """Return urllib3's error ``message`` without the URL's path and query.

    APPSEC: a webhook URL may carry a token in its path or query; the error is shown by the
    API (``last_error``) and logged, the URL only to whom may see the agent.
    """
    target = urllib3.util.parse_url(url).request_uri
    return message.replace(target, "/...") if target != "/" else message
