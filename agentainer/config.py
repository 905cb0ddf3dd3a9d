"""Settings: one declarative table, loaded with a fixed precedence.

Precedence, lowest first: the defaults below < the conf file (INI, section
``[agentainer]``) < ``AGENTAINER_<KEY>`` environment variables < command-line flags.
Unknown keys are refused, and a bad value fails at start naming where it came from.
"""

import configparser
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentainer import secretfile, units
from agentainer.errors import InvalidConfig
from agentainer.names import VOLUME_NAME_RE
from agentainer.names import parse_allowed_hosts
from agentainer.redis_password import redact

SECTION = "agentainer"
ENV_PREFIX = "AGENTAINER_"
CONFIG_ENV = "AGENTAINER_CONFIG"
CHECKOUT_CONF = Path(__file__).resolve().parent.parent / "conf" / "agentainer.conf"
SYSTEM_CONF = Path("/etc/agentainer/agentainer.conf")
TOKEN_FILE = "admin.token"
REDIS_PASSWORD_FILE = "redis.password"


def _text(value: str) -> str:
    return str(value).strip()


def _path(value: str) -> Path:
    text = str(value).strip()
    if not text:
        raise ValueError("an empty path")
    return Path(text).expanduser()


def _paths(value: str) -> tuple[Path, ...]:
    return tuple(_path(part) for part in str(value).replace(",", ":").split(":") if part.strip())


def _volume_names(value: str) -> frozenset[str]:
    names = frozenset(part.strip() for part in str(value).replace(",", ":").split(":")
                      if part.strip())
    for name in names:
        if not VOLUME_NAME_RE.match(name):
            raise ValueError(f"{name!r} is not a Docker volume name")
    return names


def _admin_token(value: str) -> str:
    text = str(value).strip()
    if text and len(text) < secretfile.MIN_LENGTH:
        raise ValueError(f"an admin token needs at least {secretfile.MIN_LENGTH} characters "
                         "(leave it empty to have one generated)")
    return text


def _redis_url(value: str) -> str:
    text = str(value).strip()
    if not text.startswith(("redis://", "rediss://", "unix://")):
        # NOTE: the loader names the value, redacted (APPSEC: it may carry a password)
        raise ValueError("not a Redis URL (redis://host:port/db, rediss://, unix://)")
    return text


def _appendfsync(value: str) -> str:
    policy = str(value).strip().lower()
    if policy not in ("always", "everysec", "no"):
        raise ValueError(f"{value!r} is not an appendfsync policy (always, everysec, no)")
    return policy


def _log_level(value: str) -> str:
    level = str(value).strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"{value!r} is not a log level (DEBUG, INFO, WARNING, ERROR)")
    return level


@dataclass(frozen=True)
class Setting:
    name: str
    convert: Callable[[Any], Any]
    default: str
    comment: str
    show: Callable[[Any], str] = repr  # how a bad value is named in the error


SETTINGS: tuple[Setting, ...] = (
    Setting("host", _text, "127.0.0.1", "address the API server listens on"),
    Setting("port", units.parse_port, "8081", "port of the API and the proxy"),
    Setting("allowed_hosts", parse_allowed_hosts, "",
            "Host names served besides IP addresses, localhost, <agent>.localhost and host "
            "(comma separated; * for any: no DNS rebinding protection)"),
    Setting("redis_url", _redis_url, "redis://127.0.0.1:6380/0",
            "Redis holding state and the journal; the default is the embedded one",
            show=lambda value: repr(redact(str(value)))),
    Setting("embedded_redis", units.parse_bool, "true",
            "run redis-server for redis_url under supervisord; false: an external one"),
    Setting("appendfsync", _appendfsync, "everysec",
            "embedded Redis AOF fsync: always (no loss on a crash), everysec (<= ~1 s), no"),
    Setting("redis_maxmemory", units.parse_size, "2g",
            "embedded Redis maxmemory (noeviction); must exceed journal_max_bytes"),
    Setting("redis_wait", units.parse_duration, "3s",
            "how long a command to an unreachable or restarting Redis is retried before "
            "it fails (the proxy then answers 503)"),
    Setting("liveness_timeout", units.parse_duration, "5s",
            "a process silent this long is dead: its leases and drain claims are taken back"),
    Setting("data_dir", _path, "~/.agentainer",
            "admin token, embedded Redis data and logs live here"),
    Setting("token", _admin_token, "",
            "admin token; empty: generated at first start into <data_dir>/admin.token",
            show=lambda value: "'***'"),
    Setting("docker_host", _text, "",
            "Docker Engine URL; empty: $DOCKER_HOST or the local socket"),
    Setting("network", _text, "agentainer-net", "bridge network agents join"),
    Setting("internal_network", _text, "agentainer-internal",
            "network for --no-egress agents (Docker internal: no way out)"),
    Setting("volume_roots", _paths, "/home:/root:/srv:/tmp:/var/tmp:/mnt:/media:/opt",
            "bind-mount host paths must lie under one of these (':' separated)"),
    Setting("allowed_volumes", _volume_names, "",
            "named volumes agents may mount although Agentainer did not create them for "
            "the agent, or their driver options bind a host path (',' or ':' separated)"),
    Setting("default_app_port", units.parse_port, "8000",
            "app port when neither --app-port nor a single EXPOSE gives one"),
    Setting("stop_timeout", units.parse_duration, "10s",
            "grace period between SIGTERM and SIGKILL on stop"),
    Setting("lock_timeout", units.parse_duration, "30s",
            "how long a lifecycle call waits for another one on the same agent"),
    Setting("threads", units.parse_positive_int, "160",
            "worker threads per server process; each open proxied stream holds one"),
    Setting("api_threads", units.parse_positive_int, "16",
            "of those, kept for the API: proxied requests past threads - api_threads get 503"),
    Setting("proxy_threads", units.parse_positive_int, "32",
            "worker threads for agents' calls on the network gateways"),
    Setting("connection_limit", units.parse_positive_int, "1000",
            "open client connections per server process on the API's address (host)"),
    Setting("gateway_connection_limit", units.parse_positive_int, "1000",
            "open connections from agents per server process, on the network gateways"),
    Setting("idle_timeout", units.parse_duration, "60s",
            "a connection with no request arriving or being answered this long is closed "
            "(whole seconds)"),
    Setting("header_timeout", units.parse_duration, "10s",
            "a request's headers must arrive within this time of its first byte"),
    Setting("body_min_rate", units.parse_size, "1k",
            "bytes per second a request body must average, after header_timeout of grace"),
    Setting("agent_max_inflight", units.parse_positive_int, "128",
            "proxied requests in flight per agent per server process; past it journaled "
            "requests queue (202), others get 503"),
    Setting("follow_limit", units.parse_positive_int, "8",
            "logs?follow=true streams per server process (fewer than api_threads)"),
    Setting("connect_timeout", units.parse_duration, "3s",
            "proxy: time to connect to an agent before it counts as down"),
    Setting("read_timeout", units.parse_duration, "300s",
            "proxy: longest silence from an agent mid-response"),
    Setting("max_body", units.parse_size, "10m", "largest request body the proxy accepts"),
    Setting("capture_limit", units.parse_size, "1m",
            "how much of each response the journal keeps (the client gets all of it)"),
    Setting("queue_limit", units.parse_positive_int, "1000", "queued requests per agent"),
    Setting("queue_max_bytes", units.parse_size, "100m", "queued request bytes per agent"),
    Setting("journal_max_bytes", units.parse_size, "1g",
            "bytes the journal holds for all agents (requests, captured responses)"),
    Setting("max_attempts", units.parse_positive_int, "5",
            "delivery attempts before a request is failed (dead letter)"),
    Setting("retry_base", units.parse_duration, "1s", "first replay backoff (doubles, jittered)"),
    Setting("retry_cap", units.parse_duration, "60s", "longest replay backoff"),
    Setting("drain_wait", units.parse_duration, "120s",
            "how long a replay job waits for an agent's app to accept connections"),
    Setting("redact_headers", units.parse_header_names,
            "Authorization,Proxy-Authorization,Cookie,Set-Cookie,X-Api-Key,Api-Key,"
            "X-Auth-Token,X-Access-Token",
            "header values the API shows as [redacted] (requests and responses; "
            "',' separated, any case); the journal keeps them for replay"),
    Setting("redact_params", units.parse_names,
            "api_key,apikey,token,access_token,refresh_token,id_token,client_secret,"
            "password,secret",
            "query parameters whose values the API shows as [redacted] (',' separated, "
            "any case)"),
    Setting("retention", units.parse_duration, "24h",
            "how long finished request records are kept"),
    Setting("body_retention", units.parse_duration, "1h",
            "how long a completed request keeps its request and response bodies"),
    Setting("history_limit", units.parse_positive_int, "10000",
            "request records listed per agent (oldest dropped from the listing first)"),
    Setting("reconcile_interval", units.parse_duration, "10s",
            "monitor: how often Redis is checked against Docker"),
    Setting("metrics_interval", units.parse_duration, "10s",
            "monitor: how often each running agent's metrics are sampled"),
    Setting("restart_base", units.parse_duration, "1s",
            "monitor: first auto-restart delay (doubles per recent restart, jittered)"),
    Setting("restart_cap", units.parse_duration, "60s", "monitor: longest auto-restart delay"),
    Setting("restart_limit", units.parse_positive_int, "5",
            "monitor: restarts within restart_window before an agent is marked failed"),
    Setting("restart_window", units.parse_duration, "5m",
            "monitor: the window restart_limit counts in"),
    Setting("log_level", _log_level, "INFO", "DEBUG, INFO, WARNING or ERROR"),
)
_BY_NAME = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True)
class Config:
    """Loaded settings; attribute names are the table's names."""

    values: Mapping[str, Any]
    source: str

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def token_file(self) -> Path:
        return self.data_dir / TOKEN_FILE

    @property
    def redis_password_file(self) -> Path:
        return self.data_dir / REDIS_PASSWORD_FILE

    def replace(self, **overrides: Any) -> "Config":
        """Return a copy with some already-converted values replaced (for tests)."""
        return Config({**self.values, **overrides}, self.source)


def find_conf_file(environ: Mapping[str, str] = os.environ) -> Path | None:
    """Return the conf file to read: ``$AGENTAINER_CONFIG``, the checkout's, or /etc's."""
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]).expanduser()
    for candidate in (CHECKOUT_CONF, SYSTEM_CONF):
        if candidate.is_file():
            return candidate
    return None


def load(path: Path | None = None, *, environ: Mapping[str, str] = os.environ,
         overrides: Mapping[str, Any] | None = None) -> Config:
    """Load settings with the documented precedence.

    Args:
        path: conf file; None finds one with :func:`find_conf_file`.
        environ: where ``AGENTAINER_*`` variables are read.
        overrides: raw values from command-line flags (None entries are ignored).

    Raises:
        InvalidConfig: unknown key or bad value; the message says where it came from.
    """
    raw: dict[str, tuple[Any, str]] = {s.name: (s.default, "default") for s in SETTINGS}
    path = path if path is not None else find_conf_file(environ)
    if path is not None:
        raw.update(_read_file(path))
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and key != CONFIG_ENV:
            name = key[len(ENV_PREFIX):].lower()
            if name in _BY_NAME:
                raw[name] = (value, f"environment variable {key}")
    for name, value in (overrides or {}).items():
        if value is not None:
            raw[name] = (value, f"option --{name.replace('_', '-')}")
    values = {}
    for name, (value, origin) in raw.items():
        try:
            values[name] = _BY_NAME[name].convert(value)
        except ValueError as ex:
            shown = _BY_NAME[name].show(value)
            raise InvalidConfig(f"{origin}: {name} = {shown}: {ex}") from ex
    return Config(values, str(path) if path else "defaults")


def _read_file(path: Path) -> dict[str, tuple[str, str]]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as ex:
        raise InvalidConfig(f"cannot read config file {path}: {ex.strerror}") from ex
    except configparser.Error as ex:
        raise InvalidConfig(f"config file {path}: {ex}") from ex
    extra = [section for section in parser.sections() if section != SECTION]
    if extra:
        raise InvalidConfig(f"{path}: unknown section [{extra[0]}] (only [{SECTION}])")
    found = {}
    if parser.has_section(SECTION):
        for key, value in parser.items(SECTION):
            if key not in _BY_NAME:
                raise InvalidConfig(f"{path} [{SECTION}]: unknown key {key!r}")
            found[key] = (value, f"{path} [{SECTION}]")
    return found


def render_conf() -> str:
    """Return the shipped conf file: every key commented out at its default."""
    lines = ["# Agentainer settings. Every key is shown at its default, commented out.",
             "# Precedence: defaults < this file < AGENTAINER_<KEY> env vars < flags.",
             f"[{SECTION}]"]
    for setting in SETTINGS:
        lines += ["", f"# {setting.comment}", f"# {setting.name} = {setting.default}"]
    return "\n".join(lines) + "\n"
