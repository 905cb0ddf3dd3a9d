"""A caller cannot pass off another address, nor write to the user's terminal (issue 9)."""

import requests

from tests.integration.journal_helpers import started
from tests.stack import Api, Stack, run_cli


def test_a_client_cannot_spoof_its_address_to_the_agent(stack: Stack, api: Api, name: str):
    started(api, name)
    spoofed = {"Forwarded": "for=10.9.9.9", "X-Real-IP": "10.9.9.9", "X-Client-IP": "10.9.9.9",
               "X-Forwarded-For": "10.9.9.9"}
    reply = requests.get(f"{stack.url}/agent/{name}/who", headers=spoofed, timeout=30)
    seen = {header.lower(): value for header, value in reply.json()["headers"]}
    assert "forwarded" not in seen and "x-real-ip" not in seen and "x-client-ip" not in seen
    assert seen["x-forwarded-for"] == "127.0.0.1"


def test_a_client_cannot_spoof_its_address_with_a_cdns_client_ip_header(stack: Stack, api: Api,
                                                                        name: str):
    started(api, name)
    claims = ("Client-IP", "True-Client-IP", "CF-Connecting-IP", "Fastly-Client-IP",
              "X-Cluster-Client-IP", "X-Forwarded", "Forwarded-For")
    reply = requests.get(f"{stack.url}/agent/{name}/who", timeout=30,
                         headers={claim: "10.9.9.9" for claim in claims})
    assert "10.9.9.9" not in repr(reply.json()["headers"])


def test_an_agents_escape_sequences_do_not_reach_the_terminal(stack: Stack, api: Api,
                                                               name: str):
    started(api, name)
    reply = requests.post(f"{stack.url}/agent/{name}/%1b%5b2J", data=b"\x1b]0;owned\x07\x1b[2J",
                          timeout=30)
    request_id = reply.headers["X-Agentainer-Request-Id"]
    shown = run_cli(stack, "requests", "show", name, request_id)
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout and "\\x1b]0;owned\\x07" in shown.stdout
