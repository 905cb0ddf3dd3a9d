"""Idempotency keys cannot cross callers (issue 9): a key is scoped by agent and by the
caller's credential, and bound to method, path, query and body."""

import secrets

import requests

from tests.stack import Api, Stack
from tests.integration.journal_helpers import started


def call(stack: Stack, agent: str, path: str, caller: str, key: str, method: str = "POST",
         body: bytes = b"order") -> requests.Response:
    return requests.request(method, f"{stack.url}/agent/{agent}{path}", data=body, timeout=30,
                            headers={"Idempotency-Key": key, "Authorization": f"Bearer {caller}"})


def test_a_key_shared_by_two_callers_never_returns_one_callers_response_to_the_other(
        stack: Stack, api: Api, name: str):
    started(api, name)
    key = f"order-{secrets.token_hex(4)}"
    alice = call(stack, name, "/pay", "alice-session", key)
    mallory = call(stack, name, "/pay", "mallory-session", key)
    assert alice.status_code == mallory.status_code == 200
    assert "X-Agentainer-Idempotent-Replay" not in mallory.headers
    assert mallory.headers["X-Agentainer-Request-Id"] != alice.headers["X-Agentainer-Request-Id"]
    assert b"alice-session" not in mallory.content  # NOTE: the echo shows what it received
    again = call(stack, name, "/pay", "alice-session", key)
    assert again.headers["X-Agentainer-Idempotent-Replay"] == "true"
    assert again.headers["X-Agentainer-Request-Id"] == alice.headers["X-Agentainer-Request-Id"]


def test_a_key_reused_with_another_method_or_path_is_refused(stack: Stack, api: Api, name: str):
    started(api, name)
    key = f"order-{secrets.token_hex(4)}"
    assert call(stack, name, "/pay", "alice", key).status_code == 200
    for method, path in (("PUT", "/pay"), ("POST", "/refund"), ("POST", "/pay?all=1")):
        reply = call(stack, name, path, "alice", key, method=method)
        assert reply.status_code == 422 and reply.json()["error"] == "idempotency_mismatch"
