"""Host names: the management API's, agents' origins, and the refused (DNS rebinding)."""

import pytest

from agentainer.api.hosts import HostPolicy
from agentainer.errors import HostNotAllowed
from agentainer.names import host_name, parse_allowed_hosts

POLICY = HostPolicy.from_settings("127.0.0.1", ("agents.lan",))


@pytest.mark.parametrize("value, name", [
    ("localhost", "localhost"), ("LocalHost:8081", "localhost"), ("localhost.", "localhost"),
    ("127.0.0.1:8081", "127.0.0.1"), ("[::1]:8081", "::1"), ("[::1]", "::1"),
    ("web.localhost:8081", "web.localhost"), ("localhost:", "localhost"),
])
def test_host_name_drops_port_brackets_case_and_trailing_dot(value, name):
    assert host_name(value) == name


@pytest.mark.parametrize("host", [
    None, "", "localhost", "localhost:9000", "127.0.0.1:8081", "[::1]:8081", "10.1.2.3",
    "agents.lan:8081", "AGENTS.LAN",
])
def test_the_api_answers_for_addresses_localhost_and_allowed_names(host):
    assert POLICY.agent_origin(host) is None


@pytest.mark.parametrize("host", [
    "evil.example", "evil.example:8081", "localhost.evil.example", "127.0.0.1.nip.io",
    "lan", "agents.lan.evil.example", "-bad.localhost", "a/b.localhost",
])
def test_other_names_are_refused(host):
    with pytest.raises(HostNotAllowed) as refused:
        POLICY.agent_origin(host)
    assert refused.value.code == "host_not_allowed"


@pytest.mark.parametrize("host, agent", [
    ("web.localhost", "web"), ("web.localhost:8081", "web"), ("WEB.localhost.", "web"),
    ("agent-0123456789ab.localhost", "agent-0123456789ab"), ("a.b.localhost", "a.b"),
])
def test_agent_origins_name_their_agent(host, agent):
    assert POLICY.agent_origin(host) == agent


def test_the_listen_host_is_allowed():
    assert HostPolicy.from_settings("myhost.lan", ()).agent_origin("myhost.lan:8081") is None


def test_a_star_allows_any_name_and_keeps_agent_origins():
    policy = HostPolicy.from_settings("127.0.0.1", parse_allowed_hosts("*"))
    assert policy.agent_origin("evil.example") is None
    assert policy.agent_origin("web.localhost") == "web"


def test_allowed_hosts_are_parsed_into_bare_names():
    assert parse_allowed_hosts(" A.lan:8081, b.lan,,[fe80::1] , a.lan") == (
        "a.lan", "b.lan", "fe80::1")
    assert parse_allowed_hosts("") == ()


@pytest.mark.parametrize("value", ["http://a.lan", "a lan", "user@a.lan"])
def test_bad_allowed_hosts_are_refused(value):
    with pytest.raises(ValueError):
        parse_allowed_hosts(value)
