"""Secrets a caller sends are shown redacted, yet replayed as sent (issue 9).

The journal keeps what the caller sent; the API (and so ``requests show``) shows the values
of the ``redact_headers`` and ``redact_params`` as ``[redacted]``.
"""

import json

import redis
import requests

from tests.integration.journal_helpers import record, started, wait_for_status
from tests.stack import Api, Stack, run_cli

SECRET = "s3cr3t-value-0123456789"


def test_configured_header_is_redacted_in_requests_show(stack: Stack, api: Api, name: str):
    started(api, name)
    reply = requests.get(f"{stack.url}/agent/{name}/call", timeout=30,
                         headers={"X-Auth-Token": SECRET, "Authorization": f"Basic {SECRET}",
                                  "X-Echo-Status": "200"})
    request_id = reply.headers["X-Agentainer-Request-Id"]
    shown = record(api, name, request_id)
    headers = {key.lower(): value for key, value in shown["headers"]}
    assert headers["x-auth-token"] == headers["authorization"] == "[redacted]"
    assert SECRET not in repr({key: value for key, value in shown.items()
                               if key != "resp_body"})  # NOTE: the echo agent's body has it
    cli = run_cli(stack, "requests", "show", name, request_id)
    assert cli.returncode == 0, cli.stderr
    assert "X-Auth-Token: [redacted]" in cli.stdout
    assert SECRET not in cli.stdout.split("\nresponse:")[0]


def test_query_token_is_redacted_in_display(stack: Stack, api: Api, name: str):
    started(api, name)
    reply = requests.get(f"{stack.url}/agent/{name}/q?page=2&access_token={SECRET}"
                         f"&API_KEY={SECRET}", timeout=30)
    assert SECRET in reply.text  # NOTE: the agent got it as sent
    request_id = reply.headers["X-Agentainer-Request-Id"]
    shown = record(api, name, request_id)
    assert shown["query"] == "page=2&access_token=[redacted]&API_KEY=[redacted]"
    listed = api.get(f"/agents/{name}/requests").json()["data"]["requests"]
    assert SECRET not in repr(listed)
    cli = run_cli(stack, "requests", "show", name, request_id)
    assert "access_token=[redacted]" in cli.stdout


def test_replay_sends_the_original_secret(stack: Stack, api: Api, name: str):
    api.deploy(name)  # NOTE: created, not started: the request is queued, then replayed
    queued = requests.post(f"{stack.url}/agent/{name}/hook?token={SECRET}", timeout=30,
                           headers={"X-Api-Key": SECRET, "Authorization": f"Bearer {SECRET}"})
    assert queued.status_code == 202, queued.text
    request_id = queued.json()["data"]["request_id"]
    assert api.post(f"/agents/{name}/start").status_code == 200
    delivered = wait_for_status(api, name, request_id, "completed")
    received = {key.lower(): value for key, value in
                json.loads(delivered["resp_body"])["headers"]}
    assert received["x-api-key"] == SECRET and received["authorization"] == f"Bearer {SECRET}"
    assert received["x-agentainer-replay"] == "true"
    assert {key.lower(): value for key, value in delivered["headers"]}["x-api-key"] == \
        "[redacted]"


def test_an_agentainer_token_is_neither_journaled_nor_replayed(stack: Stack, api: Api,
                                                               name: str, redis_url: str):
    api.deploy(name)
    queued = requests.get(f"{stack.url}/agent/{name}/x", timeout=30,
                          headers={"Authorization": f"Bearer {stack.token}"})
    request_id = queued.json()["data"]["request_id"]
    stored = redis.Redis.from_url(redis_url).hgetall(f"agentainer:req:{request_id}")
    assert stack.token.encode() not in b"".join(stored.values())
    assert api.post(f"/agents/{name}/start").status_code == 200
    delivered = wait_for_status(api, name, request_id, "completed")
    assert stack.token not in delivered["resp_body"]


def test_query_secret_after_a_semicolon_or_in_brackets_is_redacted(stack: Stack, api: Api,
                                                                    name: str):
    started(api, name)
    # NOTE: Rack (before 3) reads 'token' after the ';'; Rails, PHP and qs read
    # 'user[password]' as a password and 'api_key[]' as an API key
    reply = requests.get(f"{stack.url}/agent/{name}/q?page=2;token={SECRET}"
                         f"&user[password]={SECRET}&api_key[]={SECRET}", timeout=30)
    shown = record(api, name, reply.headers["X-Agentainer-Request-Id"])
    assert SECRET not in shown["query"] and shown["query"].count("=[redacted]") == 3, shown
    assert shown["query"].startswith("page=2;token=[redacted]&user%5Bpassword%5D=")
