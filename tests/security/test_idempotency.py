"""Idempotency keys cannot cross callers (issue 9): a key is scoped by agent and by the
caller's credential, and bound to method, path, query and body."""

import secrets
import textwrap

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


# Run inside an agent: POST through its proxy URL with a key; print the request ID and
# whether the answer was a stored one.
CALL_WITH_KEY = textwrap.dedent("""
    import os, sys, urllib.request
    url = os.environ["AGENTAINER_PROXY_URL"] + "/" + sys.argv[1] + "/pay"
    request = urllib.request.Request(url, data=b"order", headers={"Idempotency-Key": sys.argv[2]})
    with urllib.request.urlopen(request, timeout=10) as reply:
        print(reply.headers["X-Agentainer-Request-Id"],
              reply.headers.get("X-Agentainer-Idempotent-Replay", "fresh"))
""")


def test_two_agents_sharing_a_key_never_get_each_others_response(api: Api, name: str,
                                                                 docker_client):
    target, alice, mallory = (started(api, f"{name}-{role}") for role in ("t", "a", "m"))
    key = f"order-{secrets.token_hex(4)}"

    def call_from(agent: dict) -> list[str]:
        code, output = docker_client.containers.get(f"agentainer-{agent['id']}").exec_run(
            ["python3", "-c", CALL_WITH_KEY, target["name"], key])
        assert code == 0, output
        return output.decode().split()

    first = call_from(alice)
    assert call_from(mallory)[1] == "fresh"  # neither token sent: the gateway knows them
    assert call_from(alice) == [first[0], "true"]
