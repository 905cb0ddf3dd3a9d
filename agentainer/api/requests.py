"""Resources for an agent's request journal: list, read, cancel, replay."""

import base64
from typing import Any

import falcon

from agentainer.agents.service import AgentService
from agentainer.api.envelope import ok
from agentainer.api.lifecycle import param, refuse_body, whole_number
from agentainer.journal.journal import Journal
from agentainer.journal.redaction import Redactor
from agentainer.journal.replay import ReplayScheduler
from agentainer.statuses import RequestStatus

MAX_PAGE = 500


class RequestsResource:
    """GET /agents/{id}/requests: newest first; ``status``, ``offset``, ``limit``."""

    def __init__(self, agents: AgentService, journal: Journal, redactor: Redactor) -> None:
        self._agents = agents
        self._journal = journal
        self._redactor = redactor

    def on_get(self, req: falcon.Request, resp: falcon.Response, agent_id: str) -> None:
        agent_id = self._agents.resolve(agent_id)
        status = param(req, "status", RequestStatus)
        offset = param(req, "offset", whole_number) or 0
        limit = min(param(req, "limit", whole_number) or 50, MAX_PAGE)
        records, total = self._journal.page(agent_id, status=status, offset=offset, limit=limit)
        ok(resp, f"{len(records)} of {total} request(s)",
           {"agent_id": agent_id, "total": total, "offset": offset,
            "requests": [self._redactor.record(record) for record in records]})


class RequestResource:
    """GET (the record and its captured response) / DELETE (cancel a queued request)."""

    def __init__(self, agents: AgentService, journal: Journal, redactor: Redactor) -> None:
        self._agents = agents
        self._journal = journal
        self._redactor = redactor

    def on_get(self, req: falcon.Request, resp: falcon.Response, agent_id: str,
               request_id: str) -> None:
        agent_id = self._agents.resolve(agent_id)
        record = self._journal.get(agent_id, request_id)
        if record["status"] == RequestStatus.IN_FLIGHT and self._journal.settle(
                request_id) is not RequestStatus.IN_FLIGHT:
            record = self._journal.get(agent_id, request_id)  # NOTE: it ended just now
        ok(resp, f"request {request_id} is {record['status']}",
           public_record(self._redactor.record(record)))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, agent_id: str,
                  request_id: str) -> None:
        refuse_body(req, "cancel request")
        self._journal.cancel(self._agents.resolve(agent_id), request_id)
        ok(resp, f"request {request_id} cancelled", {"request_id": request_id,
                                                      "status": RequestStatus.CANCELLED})


class ReplayResource:
    """POST /agents/{id}/requests/{rid}/replay: to the front of the queue, drain now."""

    def __init__(self, agents: AgentService, journal: Journal,
                 scheduler: ReplayScheduler) -> None:
        self._agents = agents
        self._journal = journal
        self._scheduler = scheduler

    def on_post(self, req: falcon.Request, resp: falcon.Response, agent_id: str,
                request_id: str) -> None:
        refuse_body(req, "replay request")
        agent_id = self._agents.resolve(agent_id)
        self._journal.requeue(agent_id, request_id)
        self._scheduler.schedule(agent_id)
        ok(resp, f"request {request_id} queued for replay",
           {"request_id": request_id, "status": RequestStatus.QUEUED})


def public_record(record: dict[str, Any]) -> dict[str, Any]:
    """Return a record with its bodies as text (or base64 when they are not UTF-8)."""
    view = dict(record)
    for key in ("body", "resp_body"):
        raw = view.pop(key, None)
        if raw is None:
            view[key] = None
            continue
        try:
            view[key], view[f"{key}_encoding"] = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            view[key], view[f"{key}_encoding"] = base64.b64encode(raw).decode(), "base64"
    return view
