import hashlib
import json

import pytest

from agentainer.errors import Conflict, InvalidInput
from agentainer.agents.spec import (
    Agent, AgentSpec, DeployOptions, HealthCheck, TokenScope, Volume, parse_deploy, parse_empty,
)
from agentainer.statuses import AgentStatus, Desired, IdleAction, OnBusy
from agentainer.tokens import hash_token

TOKEN = "s3cret-agent-token-0123"
MANAGE_TOKEN = "s3cret-manage-token-4567"
MIB = 1024 ** 2


def deploy(**fields):
    return parse_deploy({"name": "web", "image": "nginx", **fields})


def refused(**fields) -> str:
    with pytest.raises(InvalidInput) as caught:
        deploy(**fields)
    return caught.value.message


def conflicting(code: str, **fields) -> str:
    with pytest.raises(Conflict) as caught:
        deploy(**fields)
    assert caught.value.code == code
    return caught.value.message


def test_minimal_body():
    spec, options = parse_deploy({"name": "web", "image": "nginx"})
    assert spec == AgentSpec(name="web", image="nginx")
    assert (spec.egress, spec.persist, spec.private, spec.auto_restart) == (True, True, False, False)
    assert options == DeployOptions(start=False, pull=False)


def test_every_field():
    spec, options = deploy(
        env_vars={"MODEL": "small"}, cpu_limit="500m", memory_limit="512m", pids_limit=100,
        auto_restart=True, token=TOKEN, manage_token=MANAGE_TOKEN,
        volumes=[{"container_path": "/data", "host_path": "/srv/data", "read_only": True},
                 {"container_path": "/cache", "volume": "cache"}],
        health_check={"endpoint": "/ready", "interval": "10s", "timeout": "2s", "retries": 5},
        app_port=8080, egress=False, private=True, persist=False, start=True, pull=True)
    assert spec == AgentSpec(
        name="web", image="nginx", env_vars={"MODEL": "small"}, cpu_limit=500_000_000,
        memory_limit=512 * MIB, pids_limit=100, auto_restart=True,
        invoke_token_hash=hashlib.sha256(TOKEN.encode()).hexdigest(),
        manage_token_hash=hashlib.sha256(MANAGE_TOKEN.encode()).hexdigest(),
        volumes=(Volume("/data", host_path="/srv/data", read_only=True),
                 Volume("/cache", volume="cache")),
        health_check=HealthCheck("/ready", 10.0, 2.0, 5),
        app_port=8080, egress=False, private=True, persist=False)
    assert options == DeployOptions(start=True, pull=True)


def test_unknown_fields_are_listed():
    message = refused(nmae="x", cpus=2)
    assert "unknown field(s) in deploy request: cpus, nmae" in message


@pytest.mark.parametrize("fields, unknown", [
    ({"volumes": [{"container_path": "/d", "volume": "v", "mode": "ro"}]}, "in volume: mode"),
    ({"health_check": {"path": "/health"}}, "in health_check: path"),
])
def test_unknown_nested_fields_are_refused(fields, unknown):
    assert unknown in refused(**fields)


@pytest.mark.parametrize("body", [None, [], "web", 3, [{"name": "web", "image": "nginx"}]])
def test_body_must_be_an_object(body):
    with pytest.raises(InvalidInput, match="must be a JSON object"):
        parse_deploy(body)


@pytest.mark.parametrize("body, missing", [
    ({"image": "nginx"}, "name"),
    ({"name": "web"}, "image"),
    ({"name": "", "image": "nginx"}, "name"),
    ({"name": "web", "image": None}, "image"),
])
def test_name_and_image_are_required(body, missing):
    with pytest.raises(InvalidInput, match=f"^{missing} is required$"):
        parse_deploy(body)


@pytest.mark.parametrize("name", ["a", "web-1", "my_agent.v2", "0day", "a" * 63, "agent-123"])
def test_good_names(name):
    assert deploy(name=name)[0].name == name


@pytest.mark.parametrize("name", ["Web", "WEB", ".hidden", "-web", "_web", "a" * 64, "my agent",
                                  "web/1", "wéb", 5])
def test_bad_names(name):
    assert "invalid name" in refused(name=name)


def test_name_that_looks_like_an_agent_id_is_refused():
    assert "looks like an agent ID" in refused(name="agent-0123456789ab")


@pytest.mark.parametrize("image", [
    "nginx", "nginx:1.25", "library/nginx:latest", "registry.example.com:5000/team/app:v1",
    "app@sha256:" + "a" * 64,
])
def test_good_images(image):
    assert deploy(image=image)[0].image == image


@pytest.mark.parametrize("image", [
    "nginx latest", "-nginx", ":latest", "/nginx", "a" * 300, "app@sha256:abc", "nginx;rm -rf /",
    5, ["nginx"],
])
def test_bad_images(image):
    assert refused(image=image).startswith("image: ")


def test_env_values_keep_commas_and_equals():
    env = {"OPTS": "a=1,b=2", "EMPTY": "", "_X1": "x"}
    assert deploy(env_vars=env)[0].env_vars == env


@pytest.mark.parametrize("env", [
    {"COUNT": 1}, {"FLAG": True}, {"NOTHING": None}, {"NESTED": {"a": "b"}}, {"NUL": "a\0b"},
])
def test_env_values_must_be_strings(env):
    assert "must be a string" in refused(env_vars=env)


@pytest.mark.parametrize("key", ["1ABC", "A-B", "A B", "", "A=B"])
def test_env_keys_must_be_variable_names(key):
    assert "is not a variable name" in refused(env_vars={key: "x"})


@pytest.mark.parametrize("key", ["AGENT_ID", "AGENT_NAME", "AGENTAINER_PROXY_URL"])
def test_reserved_env_vars_are_refused(key):
    assert "set by Agentainer" in refused(env_vars={key: "x"})


def test_env_must_be_an_object():
    assert refused(env_vars=["A=1"]).startswith("env_vars: ")


@pytest.mark.parametrize("field, value, expected", [
    ("cpu_limit", "0.5", 500_000_000),
    ("cpu_limit", 0.5, 500_000_000),
    ("cpu_limit", 2, 2_000_000_000),
    ("cpu_limit", "250m", 250_000_000),
    ("memory_limit", "512m", 512 * MIB),
    ("memory_limit", 512 * MIB, 512 * MIB),
    ("memory_limit", "1g", 1024 * MIB),
    ("pids_limit", "100", 100),
    ("pids_limit", 100, 100),
])
def test_limits_as_strings_or_numbers(field, value, expected):
    assert getattr(deploy(**{field: value})[0], field) == expected


@pytest.mark.parametrize("field, value", [
    ("cpu_limit", "lots"),
    ("cpu_limit", 0),
    ("cpu_limit", "inf"),  # an overflow must be a 400, not a 500
    ("memory_limit", "1k"),
    ("memory_limit", "big"),
    ("pids_limit", 0),
    ("pids_limit", "many"),
])
def test_bad_limits_are_refused(field, value):
    assert refused(**{field: value}).startswith(f"{field}: ")


def vol(**fields):
    return {"container_path": "/data", **fields}


def test_volumes():
    spec, _ = deploy(volumes=[vol(host_path="/srv/x"), vol(container_path="/c", volume="c",
                                                            read_only=True)])
    assert spec.volumes == (Volume("/data", host_path="/srv/x"),
                            Volume("/c", volume="c", read_only=True))
    assert [v.source for v in spec.volumes] == ["/srv/x", "c"]


@pytest.mark.parametrize("volume, problem", [
    (vol(host_path="data"), "must be absolute"),
    (vol(host_path="./data"), "must be absolute"),
    (vol(host_path="~/data"), "must be absolute"),
    (vol(), "exactly one of host_path and volume"),
    (vol(host_path="/srv/x", volume="x"), "exactly one of host_path and volume"),
    (vol(volume="bad name"), "volume name"),
    (vol(container_path="data", volume="v"), "must be an absolute path"),
    (vol(container_path=None, volume="v"), "must be an absolute path"),
    ({"volume": "v"}, "must be an absolute path"),
    (vol(container_path="/", volume="v"), "must not be /"),
    (vol(container_path="/data/../etc", volume="v"), "contain '..'"),
    (vol(volume="v", read_only="true"), "read_only must be true or false"),
    (vol(volume="v", read_only=1), "read_only must be true or false"),
    ("/srv:/data", "each volume is an object"),
])
def test_bad_volumes(volume, problem):
    message = refused(volumes=[volume])
    assert message.startswith("volumes: ")
    assert problem in message


def test_volumes_must_be_a_list():
    assert "must be a list" in refused(volumes={"container_path": "/data", "volume": "v"})


def test_duplicate_container_path_is_refused():
    volumes = [vol(volume="a"), vol(volume="b")]
    assert "share a container_path" in conflicting("volume_conflict", volumes=volumes)


@pytest.mark.parametrize("paths", [("/data", "/data/"), ("/data", "//data"), ("/data", "/./data")])
def test_duplicate_container_path_is_refused_after_normalising(paths):
    # Docker sees these as the same mount point.
    volumes = [vol(container_path=paths[0], volume="a"), vol(container_path=paths[1], volume="b")]
    assert "share a container_path" in conflicting("volume_conflict", volumes=volumes)


def test_container_path_root_spelled_differently_is_refused():
    # "//" is the root too.
    assert "must not be /" in refused(volumes=[vol(container_path="//", volume="v")])


@pytest.mark.parametrize("token", ["x" * 15, "", "x" * 513, 1234567890123456789, True])
def test_bad_tokens_are_refused(token):
    assert "token must be a string of 16 to 512 characters" in refused(token=token)


@pytest.mark.parametrize("token", ["x" * 16, "x" * 512])
def test_token_length_bounds(token):
    spec = deploy(token=token, private=True)[0]
    assert spec.invoke_token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert deploy(manage_token=token)[0].manage_token_hash == spec.invoke_token_hash


@pytest.mark.parametrize("token", ["x" * 15, "x" * 513, 12345678901234567890])
def test_bad_manage_tokens_are_refused(token):
    assert "manage_token must be a string of 16 to 512" in refused(manage_token=token)


def test_spec_stores_only_the_token_hashes():
    spec, _ = deploy(token=TOKEN, manage_token=MANAGE_TOKEN, private=True)
    for secret in (TOKEN, MANAGE_TOKEN):
        assert secret not in json.dumps(spec.to_dict())
        assert secret not in repr(spec)


def test_the_invoke_token_needs_a_private_agent():
    # NOTE: before the split, token also managed the agent; such a deploy fails loudly
    assert "token is the invoke token of a private agent" in refused(token=TOKEN)
    assert deploy(manage_token=TOKEN)[0].manage_token_hash is not None


def test_invoke_and_manage_tokens_differ():
    assert "must differ" in conflicting("token_in_use", token=TOKEN, manage_token=TOKEN,
                                        private=True)


def test_each_token_has_its_own_scope():
    spec, _ = deploy(token=TOKEN, manage_token=MANAGE_TOKEN, private=True)
    assert spec.scopes(hash_token(TOKEN)) == {TokenScope.INVOKE}
    assert spec.scopes(hash_token(MANAGE_TOKEN)) == {TokenScope.MANAGE}
    assert spec.scopes(hash_token("y" * 20)) == frozenset()
    assert spec.token_hashes == (hash_token(TOKEN), hash_token(MANAGE_TOKEN))


def test_a_spec_stored_before_the_split_keeps_both_scopes():
    old = {"name": "web", "image": "nginx", "token_hash": hash_token(TOKEN), "private": True}
    spec = AgentSpec.from_dict(old)
    assert spec.scopes(hash_token(TOKEN)) == {TokenScope.INVOKE, TokenScope.MANAGE}
    assert spec.token_hashes == (hash_token(TOKEN),)
    assert AgentSpec.from_dict({"name": "web", "image": "nginx", "token_hash": None}) == \
        AgentSpec(name="web", image="nginx")


def make_agent(spec: AgentSpec) -> Agent:
    return Agent(id="agent-0123456789ab", spec=spec, status=AgentStatus.CREATED,
                 desired=Desired.STOPPED, container_id=None,
                 created_at="2026-01-01T00:00:00.000Z", updated_at="2026-01-01T00:00:00.000Z")


def test_public_view_exposes_neither_token_nor_hash():
    spec, _ = deploy(token=TOKEN, manage_token=MANAGE_TOKEN, private=True)
    public = make_agent(spec).public()
    assert public["has_token"] is True and public["has_manage_token"] is True
    assert not {"token_hash", "invoke_token_hash", "manage_token_hash", "token",
                "manage_token"} & set(public)
    text = json.dumps(public)
    for secret in (TOKEN, MANAGE_TOKEN, spec.invoke_token_hash, spec.manage_token_hash):
        assert secret not in text


def test_public_view_without_token():
    public = make_agent(deploy()[0]).public()
    assert public["has_token"] is False and public["has_manage_token"] is False
    assert (public["id"], public["name"], public["status"], public["desired"]) == \
        ("agent-0123456789ab", "web", "created", "stopped")


def test_private_needs_a_token():
    assert "private agent needs a token" in refused(private=True)
    assert deploy(private=True, token=TOKEN)[0].private is True


@pytest.mark.parametrize("field", ["auto_restart", "egress", "private", "persist", "start",
                                   "pull"])
@pytest.mark.parametrize("value", ["true", "false", 1, 0, "yes"])
def test_booleans_must_be_json_booleans(field, value):
    extra = {"token": TOKEN} if field == "private" else {}
    assert refused(**{field: value}, **extra).startswith(f"{field}: ")


@pytest.mark.parametrize("field, value", [
    ("app_port", True),
    ("pids_limit", True),
    ("health_check", {"retries": True}),
])
def test_booleans_are_not_numbers(field, value):
    # JSON true is not the number 1 (bool is an int subclass in Python).
    assert refused(**{field: value}).startswith(f"{field}: ")


@pytest.mark.parametrize("port", [0, 65536, "http", -1])
def test_bad_app_port(port):
    assert refused(app_port=port).startswith("app_port: ")


@pytest.mark.parametrize("check, expected", [
    ({}, HealthCheck("/health", 30.0, 5.0, 3)),
    ({"interval": "1m", "timeout": "500ms"}, HealthCheck("/health", 60.0, 0.5, 3)),
    ({"interval": 10, "timeout": 10, "retries": "2"}, HealthCheck("/health", 10.0, 10.0, 2)),
    ({"interval": "1s", "timeout": "1s"}, HealthCheck("/health", 1.0, 1.0, 3)),
])
def test_health_check(check, expected):
    assert deploy(health_check=check)[0].health_check == expected


@pytest.mark.parametrize("check, problem", [
    ({"interval": "500ms", "timeout": "100ms"}, "interval >= 1s"),
    ({"timeout": 0}, "timeout > 0"),
    ({"interval": "soon"}, "'soon' is not a duration"),
    ({"timeout": "-1s"}, "'-1s' is not a duration"),
    ({"retries": 0}, "must be at least 1"),
    ({"endpoint": "health"}, "must be a path starting with /"),
    ({"endpoint": 5}, "must be a path starting with /"),
])
def test_bad_health_check(check, problem):
    message = refused(health_check=check)
    assert message.startswith("health_check: ")
    assert problem in message


def test_health_check_must_be_an_object():
    assert refused(health_check="/health").startswith("health_check: ")


@pytest.mark.parametrize("fields", [
    {},
    {"env_vars": {"A": "1,2=3"}, "cpu_limit": "1", "memory_limit": "1g",
     "manage_token": MANAGE_TOKEN,
     "volumes": [vol(host_path="/srv/x", read_only=True), vol(container_path="/v", volume="v")],
     "health_check": {"endpoint": "/ok", "interval": "15s"}, "app_port": 9000,
     "egress": False, "persist": False},
    {"may_call": ["b", "agent-0123456789ab"]},
    {"may_call": []},
])
def test_spec_round_trips_through_json(fields):
    spec, _ = deploy(**fields)
    assert AgentSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize("body", [None, {}])
def test_empty_body_accepted(body):
    assert parse_empty(body, "start request") is None


@pytest.mark.parametrize("body, message", [
    ({"force": True}, "unknown field(s) in start request: force (allowed: none)"),
    ([], "the request body must be a JSON object"),
    ("x", "the request body must be a JSON object"),
])
def test_body_with_fields_refused(body, message):
    with pytest.raises(InvalidInput) as caught:
        parse_empty(body, "start request")
    assert caught.value.message == message


def test_every_deploy_field_is_in_the_openapi_document():
    from agentainer.api.openapi import document
    from agentainer.agents.spec import DEPLOY_FIELDS
    described = document()["components"]["schemas"]["Deploy"]["properties"]
    assert set(described) == DEPLOY_FIELDS


@pytest.mark.parametrize("field, value", [
    ("name", "web\n"), ("image", "nginx\n"), ("env", {"KEY\n": "v"}),
    ("volumes", [{"volume": "data\n", "container_path": "/data"}]),
])
def test_a_trailing_newline_is_refused(field, value):
    """``$`` would match before a final newline; the patterns end in ``\\Z``."""
    assert refused(**{field: value})


@pytest.mark.parametrize("fields, allowed", [
    ({}, ("*",)),
    ({"egress": False}, ()),                       # APPSEC: no way out through another agent
    ({"egress": False, "may_call": ["b", "c", "b"]}, ("b", "c")),
    ({"may_call": []}, ()),
    ({"egress": False, "may_call": ["*"]}, ("*",)),
])
def test_may_call_and_its_defaults(fields, allowed):
    spec, _ = deploy(**fields)
    assert spec.calls_allowed == allowed


def test_a_spec_stored_before_may_call_gets_the_default():
    stored = AgentSpec(name="web", image="nginx", egress=False).to_dict()
    del stored["may_call"]
    assert AgentSpec.from_dict(stored).calls_allowed == ()


def test_public_view_shows_the_effective_may_call():
    spec, _ = deploy(egress=False)
    agent = Agent("agent-0123456789ab", spec, AgentStatus.CREATED, Desired.STOPPED, None,
                  "t", "t")
    assert agent.public()["may_call"] == []


@pytest.mark.parametrize("value, message", [
    ("b", "must be a list"), (["B!"], "not an agent name or ID"), ([1], "not an agent name"),
    (["*", "b"], "goes alone"), (["x"] * 101, "at most 100"),
])
def test_bad_may_call_is_refused(value, message):
    assert message in refused(may_call=value)


def test_traffic_fields_and_their_defaults():
    spec, _ = deploy()
    assert (spec.ordered, spec.max_concurrency, spec.on_busy, spec.hold) == (
        True, 0, OnBusy.QUEUE, None)
    spec, _ = deploy(ordered=False, max_concurrency=4.0, on_busy="reject", hold="1500ms")
    assert (spec.ordered, spec.max_concurrency, spec.on_busy, spec.hold) == (
        False, 4, OnBusy.REJECT, 1.5)
    assert AgentSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("fields, message", [
    ({"ordered": "yes"}, "ordered"), ({"max_concurrency": -1}, "at least 0"),
    ({"max_concurrency": 1.5}, "whole number"), ({"max_concurrency": 10_001}, "over 10000"),
    ({"on_busy": "drop"}, "queue, reject"), ({"on_busy": ["queue"]}, "on_busy"),
    ({"hold": "soon"}, "not a duration"), ({"hold": -1}, "non-negative"),
])
def test_bad_traffic_fields_are_refused(fields, message):
    assert message in refused(**fields)


def test_max_concurrency_needs_persist():
    conflicting("concurrency_needs_persist", max_concurrency=2, persist=False)
@pytest.mark.parametrize("value, seconds", [("2s", 2.0), ("500ms", 0.5), ("5m", 300.0),
                                            (90, 90.0), (0, 0.0)])
def test_idle_timeout_is_a_duration(value, seconds):
    spec, _ = deploy(idle_timeout=value)
    assert spec.idle_timeout == seconds and spec.idle_action is IdleAction.STOP


def test_idle_action_is_stop_or_pause():
    assert deploy(idle_timeout="1m", idle_action="pause")[0].idle_action is IdleAction.PAUSE
    assert "idle_action" in refused(idle_action="sleep")
    assert "idle_timeout" in refused(idle_timeout="soon")
    assert "idle_timeout" in refused(idle_timeout=-1)


def test_the_idle_rule_needs_a_persistent_agent():
    assert "persist" in conflicting("idle_needs_persist", idle_timeout="30s", persist=False)
    assert deploy(idle_timeout=0, persist=False)[0].persist is False


def test_a_stored_spec_keeps_its_idle_rule_and_an_older_one_has_none():
    spec, _ = deploy(idle_timeout="30s", idle_action="pause")
    assert AgentSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    older = {key: value for key, value in spec.to_dict().items()
             if not key.startswith("idle_")}
    assert AgentSpec.from_dict(older).idle_timeout == 0.0
