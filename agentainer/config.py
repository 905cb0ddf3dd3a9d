"""Settings: one declarative table, loaded with a fixed precedence.

Precedence, lowest first: the defaults below < the conf file (INI, section
``[agentainer]``) < ``AGENTAINER_<KEY>`` environment variables < command-line flags.
Unknown keys are refused, and a bad value fails at start naming where it came from.
"""

import configparser
import os
from collections.abc import Callable, Mapping
import dataclasses
from dataclasses import dataclass, field
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


def _optional_path(value: str) -> Path | None:
    return _path(value) if str(value).strip() else None


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


def _runtime(value: str) -> str:
    name = str(value).strip().lower()
    if name not in ("docker", "swarm"):
        raise ValueError(f"{value!r} is not a runtime (docker, swarm)")
    return name


def _log_level(value: str) -> str:
    level = str(value).strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"{value!r} is not a log level (DEBUG, INFO, WARNING, ERROR)")
    return level


@dataclass(frozen=True)
class Setting:
    """One row of the settings table: how a raw value converts, its default and comment."""

    name: str
    convert: Callable[[Any], Any]
    default: str
    comment: str
    show: Callable[[Any], str] = repr  # how a bad value is named in the error


def setting(convert: Callable[[Any], Any], default: str, comment: str, *,
            show: Callable[[Any], str] = repr) -> Any:
    """Declare a :class:`Config` field as a setting (its name is the field's)."""
    return field(metadata={"setting": (convert, default, comment, show)})


@dataclass(frozen=True)
class Config:
    """The loaded settings, one typed field per setting: the settings table itself.

    Each field's :func:`setting` holds its converter (whose return type is the field's type,
    tests/unit/test_config.py checks), its default and the comment the shipped conf file
    carries. ``source`` names the conf file read, or ``defaults``.
    """

    host: str = setting(_text, "127.0.0.1", "address the API server listens on")
    listen_network: str = setting(
        _text, "",
        "listen on this process's own address on this Docker network instead of host "
        "(the Swarm stack: docker_gwbridge, where published ports arrive)")
    port: int = setting(units.parse_port, "8081", "port of the API and the proxy")
    allowed_hosts: tuple[str, ...] = setting(
        parse_allowed_hosts, "",
        "Host names served besides IP addresses, localhost, <agent>.localhost and host "
        "(comma separated; * for any: no DNS rebinding protection)")
    redis_url: str = setting(
        _redis_url, "redis://127.0.0.1:6380/0",
        "Redis holding state and the journal; the default is the embedded one. TLS: "
        "rediss://host:port/db?ssl_ca_certs=/path/ca.pem (an external Redis)",
        show=lambda value: repr(redact(str(value))))
    embedded_redis: bool = setting(
        units.parse_bool, "true",
        "run redis-server for redis_url under supervisord; false: an external one")
    appendfsync: str = setting(
        _appendfsync, "everysec",
        "embedded Redis AOF fsync: always (no loss on a crash), everysec (<= ~1 s), no")
    redis_maxmemory: int = setting(
        units.parse_size, "2g",
        "embedded Redis maxmemory (noeviction); must exceed journal_max_bytes")
    redis_wait: float = setting(
        units.parse_duration, "3s",
        "how long a command to an unreachable or restarting Redis is retried before "
        "it fails (the proxy then answers 503)")
    liveness_timeout: float = setting(
        units.parse_duration, "5s",
        "a process silent this long is dead: its leases and drain claims are taken back")
    data_dir: Path = setting(
        _path, "~/.agentainer",
        "admin token, embedded Redis data and logs live here")
    token: str = setting(
        _admin_token, "",
        "admin token; empty: generated at first start into <data_dir>/admin.token",
        show=lambda value: "'***'")
    token_file: Path | None = setting(
        _optional_path, "",
        "the admin token's file (a Docker secret, say); empty: <data_dir>/admin.token. "
        "Generated at first start, unless set with an external Redis: it must exist then")
    redis_password_file: Path | None = setting(
        _optional_path, "",
        "the Redis password's file; empty: <data_dir>/redis.password (the embedded Redis's, "
        "generated). Set, it is also an external redis_url's password when the URL has "
        "none, and must exist")
    docker_host: str = setting(
        _text, "",
        "Docker Engine URL; empty: $DOCKER_HOST or the local socket")
    runtime: str = setting(
        _runtime, "docker",
        "docker: each agent a container on this host's Engine; swarm: each agent a Swarm "
        "service (the programs run as tasks of conf/swarm/stack.yml)")
    network: str = setting(_text, "agentainer-net",
                           "network agents join (a bridge; an attachable overlay on swarm)")
    internal_network: str = setting(
        _text, "agentainer-internal",
        "network for --no-egress agents (Docker internal: no way out)")
    agent_proxy_host: str = setting(
        _text, "",
        "the host name agents are told to reach the proxy at ($AGENTAINER_PROXY_URL); "
        "empty: the network's gateway address (the Swarm stack: agentainer_server)")
    volume_roots: tuple[Path, ...] = setting(
        _paths, "/home:/root:/srv:/tmp:/var/tmp:/mnt:/media:/opt",
        "bind-mount host paths must lie under one of these (':' separated)")
    allowed_volumes: frozenset[str] = setting(
        _volume_names, "",
        "named volumes agents may mount although Agentainer did not create them for "
        "the agent, or their driver options bind a host path (',' or ':' separated)")
    default_app_port: int = setting(
        units.parse_port, "8000",
        "app port when neither --app-port nor a single EXPOSE gives one")
    stop_timeout: float = setting(
        units.parse_duration, "10s",
        "grace period between SIGTERM and SIGKILL on stop")
    lock_timeout: float = setting(
        units.parse_duration, "30s",
        "how long a lifecycle call waits for another one on the same agent")
    threads: int = setting(
        units.parse_positive_int, "1024",
        "worker threads per server process; each open proxied stream holds one")
    api_threads: int = setting(
        units.parse_positive_int, "16",
        "of those, kept for the API: proxied requests past threads - api_threads get 503")
    proxy_threads: int = setting(
        units.parse_positive_int, "32",
        "worker threads for agents' calls on the network gateways")
    connection_limit: int = setting(
        units.parse_positive_int, "2000",
        "open client connections per server process on the API's address (host)")
    gateway_connection_limit: int = setting(
        units.parse_positive_int, "1000",
        "open connections from agents per server process, on the network gateways")
    idle_timeout: float = setting(
        units.parse_duration, "60s",
        "a connection with no request arriving or being answered this long is closed "
        "(whole seconds)")
    header_timeout: float = setting(
        units.parse_duration, "10s",
        "a request's headers must arrive within this time of its first byte")
    body_min_rate: int = setting(
        units.parse_size, "1k",
        "bytes per second a request body must average, after header_timeout of grace")
    agent_max_inflight: int = setting(
        units.parse_positive_int, "768",
        "proxied requests in flight per agent per server process; past it journaled "
        "requests queue (202), others get 503")
    follow_limit: int = setting(
        units.parse_positive_int, "8",
        "logs?follow=true streams per server process (fewer than api_threads), and as "
        "many live reads of responses (GET .../response)")
    hold: float = setting(
        units.parse_duration, "30s",
        "how long a proxied request that must queue holds its connection for the agent's "
        "answer before it gets 202 (an agent's hold, or Prefer: wait=N, overrides it)")
    hold_limit: int = setting(
        units.parse_positive_int, "64",
        "held proxied requests per server process; past it a queued request gets 202 at once")
    connect_timeout: float = setting(
        units.parse_duration, "3s",
        "proxy: time to connect to an agent before it counts as down")
    read_timeout: float = setting(
        units.parse_duration, "300s",
        "proxy: longest silence from an agent mid-response")
    max_body: int = setting(units.parse_size, "10m", "largest request body the proxy accepts")
    capture_limit: int = setting(
        units.parse_size, "1m",
        "how much of each response the journal keeps (the client gets all of it)")
    queue_limit: int = setting(units.parse_positive_int, "1000", "queued requests per agent")
    queue_max_bytes: int = setting(units.parse_size, "100m", "queued request bytes per agent")
    journal_max_bytes: int = setting(
        units.parse_size, "1g",
        "bytes the journal holds for all agents (requests, captured responses)")
    max_attempts: int = setting(
        units.parse_positive_int, "5",
        "delivery attempts before a request is failed (dead letter)")
    retry_base: float = setting(
        units.parse_duration, "1s", "first replay backoff (doubles, jittered)")
    retry_cap: float = setting(units.parse_duration, "60s", "longest replay backoff")
    drain_wait: float = setting(
        units.parse_duration, "120s",
        "how long a replay job waits for an agent's app to accept connections")
    webhook_attempts: int = setting(
        units.parse_positive_int, "12",
        "delivery attempts of a webhook event before it is failed")
    webhook_retry_base: float = setting(
        units.parse_duration, "5s", "first webhook retry delay (doubles, jittered)")
    webhook_retry_cap: float = setting(
        units.parse_duration, "1h", "longest webhook retry delay")
    webhook_timeout: float = setting(
        units.parse_duration, "10s",
        "a webhook delivery's whole time (connect, send, answer) before it fails")
    redact_headers: tuple[str, ...] = setting(
        units.parse_header_names,
        "Authorization,Proxy-Authorization,Cookie,Set-Cookie,X-Api-Key,Api-Key,"
        "X-Auth-Token,X-Access-Token",
        "header values the API shows as [redacted] (requests and responses; "
        "',' separated, any case); the journal keeps them for replay")
    redact_params: tuple[str, ...] = setting(
        units.parse_names,
        "api_key,apikey,token,access_token,refresh_token,id_token,client_secret,"
        "password,secret",
        "query parameters whose values the API shows as [redacted] (',' separated, "
        "any case)")
    retention: float = setting(
        units.parse_duration, "24h",
        "how long finished request records are kept")
    body_retention: float = setting(
        units.parse_duration, "1h",
        "how long a completed request keeps its request and response bodies")
    history_limit: int = setting(
        units.parse_positive_int, "10000",
        "request records listed per agent (oldest dropped from the listing first)")
    reconcile_interval: float = setting(
        units.parse_duration, "10s",
        "monitor: how often Redis is checked against Docker")
    metrics_interval: float = setting(
        units.parse_duration, "10s",
        "monitor: how often each running agent's metrics are sampled")
    restart_base: float = setting(
        units.parse_duration, "1s",
        "monitor: first auto-restart delay (doubles per recent restart, jittered)")
    restart_cap: float = setting(
        units.parse_duration, "60s", "monitor: longest auto-restart delay")
    restart_limit: int = setting(
        units.parse_positive_int, "5",
        "monitor: restarts within restart_window before an agent is marked failed")
    restart_window: float = setting(
        units.parse_duration, "5m",
        "monitor: the window restart_limit counts in")
    log_level: str = setting(_log_level, "INFO", "DEBUG, INFO, WARNING or ERROR")
    source: str = "defaults"

    @property
    def token_path(self) -> Path:
        return self.token_file or self.data_dir / TOKEN_FILE

    @property
    def redis_password_path(self) -> Path:
        return self.redis_password_file or self.data_dir / REDIS_PASSWORD_FILE

    def replace(self, **overrides: Any) -> "Config":
        """Return a copy with some already-converted values replaced (for tests)."""
        return dataclasses.replace(self, **overrides)


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, *f.metadata["setting"]) for f in dataclasses.fields(Config)
    if "setting" in f.metadata)
_BY_NAME = {s.name: s for s in SETTINGS}


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
    return Config(**values, source=str(path) if path else "defaults")


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
