import dataclasses
import typing
from pathlib import Path

import pytest

from agentainer import config
from agentainer.errors import InvalidConfig


@pytest.fixture
def conf(tmp_path):
    """Write a conf file and return its path."""
    def write(text: str) -> Path:
        path = tmp_path / "agentainer.conf"
        path.write_text(text, encoding="utf-8")
        return path
    return write


def values(settings: config.Config) -> dict:
    """Return the settings' values by name, without ``source``."""
    return {s.name: getattr(settings, s.name) for s in config.SETTINGS}


def test_every_field_is_a_setting_typed_as_its_converter_returns():
    hints = typing.get_type_hints(config.Config)
    fields = [f.name for f in dataclasses.fields(config.Config) if f.name != "source"]
    assert fields == [s.name for s in config.SETTINGS]
    for s in config.SETTINGS:
        assert typing.get_type_hints(s.convert)["return"] == hints[s.name], s.name


def test_defaults(conf):
    settings = config.load(conf(""), environ={})
    assert values(settings) == {
        "host": "127.0.0.1",
        "listen_network": "",
        "port": 8081,
        "allowed_hosts": (),
        "redis_url": "redis://127.0.0.1:6380/0",
        "embedded_redis": True,
        "appendfsync": "everysec",
        "redis_maxmemory": 2 << 30,
        "redis_wait": 3.0,
        "liveness_timeout": 5.0,
        "data_dir": Path("~/.agentainer").expanduser(),
        "token": "",
        "token_file": None,
        "redis_password_file": None,
        "docker_host": "",
        "runtime": "docker",
        "network": "agentainer-net",
        "internal_network": "agentainer-internal",
        "agent_proxy_host": "",
        "volume_roots": tuple(Path(p) for p in
                              ("/home", "/root", "/srv", "/tmp", "/var/tmp", "/mnt", "/media",
                               "/opt")),
        "allowed_volumes": frozenset(),
        "default_app_port": 8000,
        "stop_timeout": 10.0,
        "lock_timeout": 30.0,
        "threads": 1024,
        "api_threads": 16,
        "proxy_threads": 32,
        "connection_limit": 2000,
        "gateway_connection_limit": 1000,
        "idle_timeout": 60.0,
        "header_timeout": 10.0,
        "body_min_rate": 1024,
        "agent_max_inflight": 768,
        "follow_limit": 8,
        "hold": 30.0,
        "hold_limit": 64,
        "connect_timeout": 3.0,
        "read_timeout": 300.0,
        "max_body": 10 * 1024 * 1024,
        "capture_limit": 1024 * 1024,
        "queue_limit": 1000,
        "queue_max_bytes": 100 << 20,
        "journal_max_bytes": 1 << 30,
        "max_attempts": 5,
        "retry_base": 1.0,
        "retry_cap": 60.0,
        "drain_wait": 120.0,
        "webhook_attempts": 12,
        "webhook_retry_base": 5.0,
        "webhook_retry_cap": 3600.0,
        "webhook_timeout": 10.0,
        "redact_headers": ("Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie",
                           "X-Api-Key", "Api-Key", "X-Auth-Token", "X-Access-Token"),
        "redact_params": ("api_key", "apikey", "token", "access_token", "refresh_token",
                          "id_token", "client_secret", "password", "secret"),
        "retention": 86400.0,
        "body_retention": 3600.0,
        "history_limit": 10000,
        "reconcile_interval": 10.0,
        "metrics_interval": 10.0,
        "restart_base": 1.0,
        "restart_cap": 60.0,
        "restart_limit": 5,
        "restart_window": 300.0,
        "log_level": "INFO",
    }
    assert settings.token_path == Path("~/.agentainer/admin.token").expanduser()


def test_shipped_conf_file_loads_to_the_defaults(conf):
    assert values(config.load(config.CHECKOUT_CONF, environ={})) == \
        values(config.load(conf(""), environ={}))


@pytest.mark.parametrize("environ, overrides, port", [
    ({}, None, 9000),
    ({"AGENTAINER_PORT": "9001"}, None, 9001),
    ({"AGENTAINER_PORT": "9001"}, {"port": "9002"}, 9002),
    ({"AGENTAINER_PORT": "9001"}, {"port": None}, 9001),
])
def test_precedence(conf, environ, overrides, port):
    path = conf("[agentainer]\nport = 9000\nthreads = 4\n")
    settings = config.load(path, environ=environ, overrides=overrides)
    assert settings.port == port
    assert settings.threads == 4
    assert settings.host == "127.0.0.1"


def test_env_values_are_converted(conf):
    environ = {"AGENTAINER_LOG_LEVEL": "debug", "AGENTAINER_VOLUME_ROOTS": "/srv,/data:/mnt",
               "AGENTAINER_STOP_TIMEOUT": "500ms"}
    settings = config.load(conf(""), environ=environ)
    assert settings.log_level == "DEBUG"
    assert settings.volume_roots == (Path("/srv"), Path("/data"), Path("/mnt"))
    assert settings.stop_timeout == 0.5


def test_unrelated_agentainer_env_vars_are_ignored(conf):
    settings = config.load(conf(""), environ={"AGENTAINER_URL": "http://x",
                                              "AGENTAINER_CONFIG": "/nonexistent"})
    assert not hasattr(settings, "url")


def test_unknown_key_in_file_is_refused(conf):
    path = conf("[agentainer]\nport = 9000\nprot = 9001\n")
    with pytest.raises(InvalidConfig) as caught:
        config.load(path, environ={})
    assert str(path) in caught.value.message
    assert "'prot'" in caught.value.message


def test_unknown_section_is_refused(conf):
    path = conf("[agentainer]\n[server]\nport = 9000\n")
    with pytest.raises(InvalidConfig) as caught:
        config.load(path, environ={})
    assert str(path) in caught.value.message
    assert "[server]" in caught.value.message


@pytest.mark.parametrize("text", ["port = 9000\n", "[agentainer\n"])
def test_malformed_file_is_refused(conf, text):
    path = conf(text)
    with pytest.raises(InvalidConfig, match="config file"):
        config.load(path, environ={})


def test_missing_file_is_refused(tmp_path):
    path = tmp_path / "missing.conf"
    with pytest.raises(InvalidConfig, match="cannot read config file"):
        config.load(path, environ={})


BAD_VALUES = [
    ("port", "http"),
    ("port", "70000"),
    ("default_app_port", "0"),
    ("redis_url", "localhost:6379"),
    ("data_dir", ""),
    ("stop_timeout", "soon"),
    ("lock_timeout", "-1"),
    ("threads", "0"),
    ("log_level", "LOUD"),
]


@pytest.mark.parametrize("key, value", BAD_VALUES)
def test_bad_value_in_file_names_file_key_and_value(conf, key, value):
    path = conf(f"[agentainer]\n{key} = {value}\n")
    with pytest.raises(InvalidConfig) as caught:
        config.load(path, environ={})
    message = caught.value.message
    assert str(path) in message
    assert f"{key} = {value!r}" in message


@pytest.mark.parametrize("key, value", BAD_VALUES)
def test_bad_value_in_env_names_variable_key_and_value(conf, key, value):
    variable = f"AGENTAINER_{key.upper()}"
    with pytest.raises(InvalidConfig) as caught:
        config.load(conf(""), environ={variable: value})
    message = caught.value.message
    assert f"environment variable {variable}" in message
    assert f"{key} = {value!r}" in message


@pytest.mark.parametrize("key, value", BAD_VALUES)
def test_bad_override_names_option_key_and_value(conf, key, value):
    with pytest.raises(InvalidConfig) as caught:
        config.load(conf(""), environ={}, overrides={key: value})
    message = caught.value.message
    assert f"option --{key.replace('_', '-')}" in message
    assert f"{key} = {value!r}" in message


def test_render_conf_lists_every_setting_at_its_default():
    lines = config.render_conf().splitlines()
    assert "[agentainer]" in lines
    for setting in config.SETTINGS:
        assert f"# {setting.comment}" in lines
        assert f"# {setting.name} = {setting.default}" in lines


def test_shipped_conf_file_is_render_conf():
    shipped = (Path(__file__).parents[2] / "conf" / "agentainer.conf").read_text(encoding="utf-8")
    assert shipped == config.render_conf()


def test_find_conf_file_honours_agentainer_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config.find_conf_file({"AGENTAINER_CONFIG": "/srv/a.conf"}) == Path("/srv/a.conf")
    assert config.find_conf_file({"AGENTAINER_CONFIG": "~/a.conf"}) == tmp_path / "a.conf"


def test_find_conf_file_falls_back_to_checkout_then_system(tmp_path, monkeypatch):
    checkout, system = tmp_path / "checkout.conf", tmp_path / "system.conf"
    monkeypatch.setattr(config, "CHECKOUT_CONF", checkout)
    monkeypatch.setattr(config, "SYSTEM_CONF", system)
    assert config.find_conf_file({}) is None
    system.touch()
    assert config.find_conf_file({}) == system
    checkout.touch()
    assert config.find_conf_file({}) == checkout


def test_load_reads_the_file_named_by_agentainer_config(conf):
    path = conf("[agentainer]\nport = 9000\n")
    settings = config.load(environ={"AGENTAINER_CONFIG": str(path)})
    assert settings.port == 9000
    assert settings.source == str(path)


def test_a_configured_admin_token_shorter_than_the_minimum_is_refused(conf):
    with pytest.raises(InvalidConfig, match="at least 16 characters") as caught:
        config.load(conf("[agentainer]\ntoken = short\n"), environ={})
    assert "short" not in caught.value.message  # APPSEC: a secret is not echoed
    assert config.load(conf(""), environ={"AGENTAINER_TOKEN": "x" * 16}).token == "x" * 16


def test_a_redacted_header_name_must_be_a_header_name(conf):
    with pytest.raises(InvalidConfig, match="redact_headers.*'X Bad' is not a header name"):
        config.load(conf("[agentainer]\nredact_headers = Cookie, X Bad\n"), environ={})


def test_an_external_redis_takes_its_password_from_redis_password_file(conf, tmp_path):
    from agentainer import redis_password
    from agentainer.errors import InvalidConfig
    secret = tmp_path / "redis.password"
    settings = config.load(conf(""), environ={
        "AGENTAINER_REDIS_URL": "redis://redis.example:6379/0",
        "AGENTAINER_REDIS_PASSWORD_FILE": str(secret)})
    with pytest.raises(InvalidConfig, match="redis_password_file"):
        redis_password.for_settings(settings)
    secret.write_text("p" * 32 + "\n")
    assert redis_password.for_settings(settings) == "p" * 32
    assert redis_password.for_settings(settings.replace(redis_password_file=None)) is None
    named = settings.replace(redis_url="redis://:inurl@redis.example:6379/0")
    assert redis_password.for_settings(named) is None  # NOTE: the URL's own wins


def test_token_file_moves_the_admin_token(conf, tmp_path):
    settings = config.load(conf(""), environ={"AGENTAINER_TOKEN_FILE": str(tmp_path / "t")})
    assert settings.token_path == tmp_path / "t"
    assert config.load(conf(""), environ={}).token_path.name == "admin.token"
