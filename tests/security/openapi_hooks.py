"""Schemathesis hooks for tests/security/test_openapi_fuzz.py (SCHEMATHESIS_HOOKS).

APPSEC: the fuzz must never make Docker contact a registry, nor start containers without
bound: ``pull: true`` is sent as ``false``, and once ``MAX_STARTED`` deploys were
accepted, ``start: true`` is sent as ``false`` (the test removes every agent made). A valid
``webhook`` is sent as a loopback URL nobody listens on, so no event leaves the host.
"""

import schemathesis

from agentainer.names import WEBHOOK_URL_MAX, WEBHOOK_URL_RE

MAX_STARTED = 6  # deploys accepted before start: true is sent as false
FOLLOW = ("true", "1", "yes", "on")
_deployed = [0]
LOOPBACK_WEBHOOK = "http://127.0.0.1:9/fuzz"  # NOTE: the discard port: refused


def _is_deploy(case) -> bool:
    return case.method.upper() == "POST" and case.path == "/agents"


@schemathesis.hook
def before_call(context, case, kwargs) -> None:
    if case.path.endswith("/logs") and isinstance(case.query, dict) and \
            str(case.query.get("follow", "")).lower() in FOLLOW:
        case.query["follow"] = "false"  # NOTE: a followed running agent's log never ends
    if not _is_deploy(case) or not isinstance(case.body, dict):
        return
    if case.body.get("pull") is True:
        case.body["pull"] = False
    webhook = case.body.get("webhook")
    if isinstance(webhook, str) and len(webhook) <= WEBHOOK_URL_MAX and \
            WEBHOOK_URL_RE.match(webhook):
        case.body["webhook"] = LOOPBACK_WEBHOOK
    if case.body.get("start") is True and _deployed[0] >= MAX_STARTED:
        case.body["start"] = False


@schemathesis.hook
def after_call(context, case, response) -> None:
    if _is_deploy(case) and response.status_code in (200, 201):
        _deployed[0] += 1
