"""Bad input gets 400 with a stable code, never 500 or a misleading 503 (issue 9, in part)."""

import pytest

from tests.integration.journal_helpers import started
from tests.stack import Api


@pytest.mark.parametrize("field, value", [
    ("name", "web\n"), ("image", "agentainer/echo-agent\n"),
])
def test_a_trailing_newline_is_refused(api: Api, name: str, field: str, value: str):
    body = {"name": name, "image": "agentainer/echo-agent", field: value}
    reply = api.post("/agents", json=body)
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_input", reply.text


def test_an_env_key_with_a_trailing_newline_is_refused(api: Api, name: str):
    reply = api.post("/agents", json={"name": name, "image": "agentainer/echo-agent",
                                      "env": {"KEY\n": "v"}})
    assert reply.status_code == 400, reply.text


@pytest.mark.parametrize("param", ["offset", "limit"])
@pytest.mark.parametrize("value", [str(2 ** 64), str(2 ** 70), "-1", "1e3", "x"])
def test_paging_beyond_64_bits_is_refused(api: Api, name: str, param: str, value: str):
    started(api, name)
    reply = api.get(f"/agents/{name}/requests", params={param: value})
    assert reply.status_code == 400, reply.text


@pytest.mark.parametrize("since", [str(10 ** 30), "-1e400", "nan", "inf"])
def test_an_overflowing_logs_since_is_refused(api: Api, name: str, since: str):
    started(api, name)
    reply = api.get(f"/agents/{name}/logs", params={"since": since})
    assert reply.status_code == 400, reply.text


def test_deeply_nested_json_is_refused(api: Api):
    body = "[" * 100_000 + "]" * 100_000
    reply = api.post("/agents", data=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == 400, reply.text
