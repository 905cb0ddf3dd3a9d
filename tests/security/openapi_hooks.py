"""Schemathesis hooks for tests/security/test_openapi_fuzz.py (SCHEMATHESIS_HOOKS).

APPSEC: the fuzz must never make Docker contact a registry, nor start containers without
bound: ``pull: true`` is sent as ``false``, and once ``MAX_STARTED`` deploys were
accepted, ``start: true`` is sent as ``false`` (the test removes every agent made).
"""

import schemathesis

MAX_STARTED = 6  # deploys accepted before start: true is sent as false
FOLLOW = ("true", "1", "yes", "on")
_deployed = [0]


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
    if case.body.get("start") is True and _deployed[0] >= MAX_STARTED:
        case.body["start"] = False


@schemathesis.hook
def after_call(context, case, response) -> None:
    if _is_deploy(case) and response.status_code in (200, 201):
        _deployed[0] += 1
