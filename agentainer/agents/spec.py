"""Agents as data: the deploy spec, its validation, and the stored record."""

import base64
import enum
import hmac
import posixpath
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

from agentainer import units
from agentainer.errors import Conflict, InvalidInput, InvalidTransition
from agentainer.names import (
    CONSTRAINT_RE, ENV_KEY_RE, ID_RE, IMAGE_MAX, IMAGE_RE, NAME_RE, VOLUME_NAME_RE, WEBHOOK_SECRET_RE,
    WEBHOOK_URL_MAX, WEBHOOK_URL_RE,
)
from agentainer.statuses import AgentStatus, Desired, Idle, IdleAction, OnBusy
from agentainer.tokens import hash_token

RESERVED_ENV = ("AGENT_ID", "AGENT_NAME", "AGENTAINER_PROXY_URL")
MAX_ENV = 200
MAX_VOLUMES = 32
MAX_TOKEN = 512
MAX_MAY_CALL = 100
MAX_REPLICAS = 100
MAX_CONSTRAINTS = 20
ANY_AGENT = "*"
WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_SECRET_BYTES = 32  # NOTE: a generated secret's; Standard Webhooks asks for 24 to 64


class TokenScope(enum.StrEnum):
    """What one of an agent's tokens grants on that agent (see api/auth.py, README "Auth")."""

    INVOKE = "invoke"   # the proxy: /agent/<id>/... (required there when the agent is private)
    MANAGE = "manage"   # the management routes: /agents/<id> and everything under it


def now() -> str:
    """Return the current UTC time as an ISO-8601 string."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_agent_id() -> str:
    return f"agent-{secrets.token_hex(6)}"


@dataclass(frozen=True)
class Volume:
    """A bind mount (``host_path``) or a named volume (``volume``) at ``container_path``."""

    container_path: str
    host_path: str | None = None
    volume: str | None = None
    read_only: bool = False

    @property
    def source(self) -> str:
        return self.host_path or self.volume or ""


@dataclass(frozen=True)
class HealthCheck:
    endpoint: str = "/health"
    interval: float = 30.0
    timeout: float = 5.0
    retries: int = 3


@dataclass(frozen=True)
class AgentSpec:
    """What the user deployed; immutable after deploy."""

    name: str
    image: str
    env_vars: dict[str, str] = field(default_factory=dict)
    cpu_limit: int = 0
    memory_limit: int = 0
    pids_limit: int = 0
    auto_restart: bool = False
    invoke_token_hash: str | None = None
    manage_token_hash: str | None = None
    volumes: tuple[Volume, ...] = ()
    health_check: HealthCheck | None = None
    app_port: int | None = None
    egress: bool = True
    private: bool = False
    persist: bool = True
    may_call: tuple[str, ...] | None = None  # None: the default, see calls_allowed
    ordered: bool = True         # a new request waits behind the agent's backlog
    max_concurrency: int = 0     # requests in flight to the agent at once (0: no limit)
    on_busy: OnBusy = OnBusy.QUEUE
    hold: float | None = None    # seconds a queued request is held (None: the hold setting)
    idle_timeout: float = 0.0   # seconds without a request before the idle rule acts; 0: never
    idle_action: IdleAction = IdleAction.STOP
    webhook: str | None = None  # URL the agent's events are POSTed to (agentainer.webhooks)
    # APPSEC: kept to sign the events, so stored as given (not hashed); the deploy answer
    # shows it once (Agent.deployed), the API never again (Agent.public)
    webhook_secret: str | None = field(default=None, repr=False)
    replicas: int = 1            # tasks of the agent's service (runtime = swarm)
    constraints: tuple[str, ...] = ()  # Swarm placement constraints (runtime = swarm)

    @property
    def calls_allowed(self) -> tuple[str, ...]:
        """Return the agents (names, IDs, or ``*``: any) this one may call via the gateway.

        APPSEC: by default a --no-egress agent may call none: through another agent it
        would have a way out after all.
        """
        if self.may_call is not None:
            return self.may_call
        return (ANY_AGENT,) if self.egress else ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def token_hashes(self) -> tuple[str, ...]:
        """The hashes this agent holds in the store's token table (each once)."""
        return tuple(dict.fromkeys(h for h in (self.invoke_token_hash, self.manage_token_hash)
                                   if h))

    def scopes(self, token_hash: str) -> frozenset[TokenScope]:
        """Return what the token with this hash grants on this agent (nothing if not its)."""
        granted = set()
        # APPSEC: constant-time, like every token comparison
        if self.invoke_token_hash and hmac.compare_digest(token_hash, self.invoke_token_hash):
            granted.add(TokenScope.INVOKE)
        if self.manage_token_hash and hmac.compare_digest(token_hash, self.manage_token_hash):
            granted.add(TokenScope.MANAGE)
        return frozenset(granted)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AgentSpec":
        data = dict(data)
        # NOTE: a spec stored before the scopes were split has one token_hash, which both
        # called and managed the agent; it keeps both scopes (README, "Auth").
        legacy = data.pop("token_hash", None)
        if legacy:
            data.setdefault("invoke_token_hash", legacy)
            data.setdefault("manage_token_hash", legacy)
        data["volumes"] = tuple(Volume(**v) for v in data.get("volumes", ()))
        if data.get("health_check"):
            data["health_check"] = HealthCheck(**data["health_check"])
        if data.get("may_call") is not None:
            data["may_call"] = tuple(data["may_call"])
        data["constraints"] = tuple(data.get("constraints", ()))
        if "on_busy" in data:
            data["on_busy"] = OnBusy(data["on_busy"])
        if "idle_action" in data:
            data["idle_action"] = IdleAction(data["idle_action"])
        return cls(**data)


@dataclass(frozen=True)
class Agent:
    """An agent as stored: the spec plus what changes over its life."""

    id: str
    spec: AgentSpec
    status: AgentStatus
    desired: Desired
    container_id: str | None
    created_at: str
    updated_at: str
    last_error: str | None = None
    restarts: int = 0
    idle: Idle = Idle.NONE

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def container(self) -> str:
        """The agent's container, which every status but a half-done deploy has.

        Raises:
            InvalidTransition: the agent has no container (its deploy did not finish).
        """
        if not self.container_id:
            raise InvalidTransition(f"agent {self.name} has no container")
        return self.container_id

    def public(self) -> dict[str, Any]:
        """Return the API view: never a token or its hash."""
        spec = self.spec.to_dict()
        spec.pop("invoke_token_hash")
        spec.pop("manage_token_hash")
        spec.pop("webhook_secret")
        spec["may_call"] = list(self.spec.calls_allowed)
        return {"id": self.id, **spec, "has_token": self.spec.invoke_token_hash is not None,
                "has_manage_token": self.spec.manage_token_hash is not None,
                "status": self.status.value, "desired": self.desired.value,
                "container_id": self.container_id, "last_error": self.last_error,
                "restarts": self.restarts,
                # NOTE: stopped or paused by the idle rule (a request wakes it), not its user
                "idle": self.idle in (Idle.STOPPED, Idle.PAUSED),
                "created_at": self.created_at, "updated_at": self.updated_at}

    def deployed(self) -> dict[str, Any]:
        """Return the deploy's answer: :meth:`public`, and the webhook secret, shown this
        once (the webhook's receiver needs it to check signatures)."""
        view = self.public()
        if self.spec.webhook_secret:
            view["webhook_secret"] = self.spec.webhook_secret
        return view


@dataclass(frozen=True)
class DeployOptions:
    """How to carry out one deploy (not part of the agent's spec)."""

    start: bool = False     # start the agent at once
    pull: bool = False      # pull the image from its registry first


DEPLOY_FIELDS = frozenset({
    "name", "image", "env_vars", "cpu_limit", "memory_limit", "pids_limit", "auto_restart",
    "token", "manage_token", "volumes", "health_check", "app_port", "egress", "private",
    "persist", "start", "pull", "may_call", "ordered", "max_concurrency", "on_busy", "hold",
    "idle_timeout", "idle_action", "webhook", "webhook_secret", "replicas", "constraints",
})
MAX_CONCURRENCY = 10_000


def parse_deploy(body: Any) -> tuple[AgentSpec, DeployOptions]:
    """Validate a deploy request body.

    Returns:
        The spec (tokens hashed) and how to deploy it (start at once, pull first).

    Raises:
        InvalidInput: with a message naming the field and what is wrong with it.
    """
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    _reject_unknown(body, DEPLOY_FIELDS, "deploy request")
    for required in ("name", "image"):
        if not body.get(required):
            raise InvalidInput(f"{required} is required")
    token = _token(body, "token")
    manage_token = _token(body, "manage_token")
    if body.get("private") and token is None:
        raise InvalidInput("a private agent needs a token (its proxy path requires it)")
    webhook = _field(body, "webhook", _webhook_url, None)
    secret = _field(body, "webhook_secret", _webhook_secret, None)
    if secret is not None and webhook is None:
        raise InvalidInput("webhook_secret signs a webhook's events: send webhook too")
    if webhook is not None and secret is None:
        secret = new_webhook_secret()
    spec = AgentSpec(
        name=validate_name(body["name"]),
        image=_field(body, "image", _image),
        env_vars=_field(body, "env_vars", _env, {}),
        cpu_limit=_field(body, "cpu_limit", units.parse_cpu, 0),
        memory_limit=_field(body, "memory_limit", units.parse_memory, 0),
        pids_limit=_field(body, "pids_limit", units.parse_positive_int, 0),
        auto_restart=_field(body, "auto_restart", _strict_bool, False),
        invoke_token_hash=hash_token(token) if token is not None else None,
        manage_token_hash=hash_token(manage_token) if manage_token is not None else None,
        volumes=_field(body, "volumes", _volumes, ()),
        health_check=_field(body, "health_check", _health_check, None),
        app_port=_field(body, "app_port", units.parse_port, None),
        egress=_field(body, "egress", _strict_bool, True),
        private=_field(body, "private", _strict_bool, False),
        persist=_field(body, "persist", _strict_bool, True),
        may_call=_field(body, "may_call", _may_call, None),
        ordered=_field(body, "ordered", _strict_bool, True),
        max_concurrency=_field(body, "max_concurrency", _concurrency, 0),
        on_busy=_field(body, "on_busy", _member(OnBusy), OnBusy.QUEUE),
        hold=_field(body, "hold", units.parse_duration, None),
        idle_timeout=_field(body, "idle_timeout", units.parse_duration, 0.0),
        idle_action=_field(body, "idle_action", _member(IdleAction), IdleAction.STOP),
        webhook=webhook, webhook_secret=secret,
        replicas=_field(body, "replicas", _replicas, 1),
        constraints=_field(body, "constraints", _constraints, ()),
    )
    if token is not None and not spec.private:
        # NOTE: token is the invoke token, which only a private agent's proxy path asks
        # for; before the scopes were split it managed the agent too, so a deploy that
        # still means that fails here rather than getting a token that manages nothing
        raise InvalidInput("token is the invoke token of a private agent: add private, or "
                           "send manage_token for a token that manages the agent")
    # NOTE: 409, not 400: like a token another agent holds (token_in_use), the body is
    # well-formed but clashes with itself in a way JSON Schema cannot state (openapi.py)
    if token is not None and token == manage_token:
        raise Conflict("token and manage_token must differ (one calls the agent, the "
                       "other manages it)", code="token_in_use")
    if spec.max_concurrency and not spec.persist:
        # NOTE: the limit is kept in the journal (its in-flight set), which a --no-persist
        # agent's requests never enter
        raise Conflict("max_concurrency needs persist: the journal counts the requests in "
                       "flight", code="concurrency_needs_persist")
    # NOTE: the idle rule reads the journal (requests in flight, queued, last admitted),
    # which sees nothing of a --no-persist agent's requests
    if spec.idle_timeout and not spec.persist:
        raise Conflict("idle_timeout needs a persistent agent: the idle rule sees only "
                       "journaled requests (drop persist: false)", code="idle_needs_persist")
    targets = [volume.container_path for volume in spec.volumes]
    if len(set(targets)) != len(targets):
        raise Conflict("two volumes share a container_path", code="volume_conflict")
    return spec, DeployOptions(start=_field(body, "start", _strict_bool, False),
                               pull=_field(body, "pull", _strict_bool, False))


def _token(body: dict, key: str) -> str | None:
    token = body.get(key)
    if token is not None and (not isinstance(token, str) or not 16 <= len(token) <= MAX_TOKEN):
        raise InvalidInput(f"{key} must be a string of 16 to {MAX_TOKEN} characters")
    return token


def validate_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidInput(f"invalid name {name!r}: use 1-63 characters a-z 0-9 _ . -, "
                           "starting with a letter or digit")
    if ID_RE.match(name):
        raise InvalidInput(f"invalid name {name!r}: it looks like an agent ID")
    return name


def parse_empty(body: Any, what: str) -> None:
    """Validate the body of a request that takes no fields: none, or ``{}``.

    Raises:
        InvalidInput: the body is not an object, or has any field.
    """
    if body is None:
        return
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    _reject_unknown(body, frozenset(), what)


def _reject_unknown(body: dict, allowed: frozenset, what: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(f"unknown field(s) in {what}: {', '.join(unknown)} "
                           f"(allowed: {', '.join(sorted(allowed)) or 'none'})")


def _field(body: dict, name: str, convert: Callable[[Any], Any], default: Any = None) -> Any:
    value = body.get(name)
    if value is None:
        return default
    try:
        return convert(value)
    except (ValueError, TypeError) as ex:
        raise InvalidInput(f"{name}: {ex}") from ex


def _strict_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not true or false")
    return value


def _concurrency(value: Any) -> int:
    number = units.parse_count(value)
    if number > MAX_CONCURRENCY:
        raise ValueError(f"{value!r} is over {MAX_CONCURRENCY}")
    return number


def _replicas(value: Any) -> int:
    number = units.parse_positive_int(value)
    if number > MAX_REPLICAS:
        raise ValueError(f"{value!r} is over {MAX_REPLICAS}")
    return number


def _constraints(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_CONSTRAINTS:
        raise ValueError(f"must be a list of at most {MAX_CONSTRAINTS} placement constraints")
    for constraint in value:
        if not isinstance(constraint, str) or not CONSTRAINT_RE.match(constraint):
            raise ValueError(f"{constraint!r} is not a placement constraint (like "
                             "node.labels.gpu==true or node.role!=manager)")
    return tuple(dict.fromkeys(value))


E = TypeVar("E", bound=enum.StrEnum)


def _member(choices: type[E]) -> Callable[[Any], E]:
    """Return a converter to one of ``choices`` (a StrEnum) from its value."""
    def convert(value: Any) -> E:
        if value not in tuple(choices):
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return choices(value)
    return convert


def _may_call(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_MAY_CALL:
        raise ValueError(f"must be a list of at most {MAX_MAY_CALL} agent names or IDs, "
                         f"or [\"{ANY_AGENT}\"] for any agent")
    for ref in value:
        if ref != ANY_AGENT and not (isinstance(ref, str)
                                     and (NAME_RE.match(ref) or ID_RE.match(ref))):
            raise ValueError(f"{ref!r} is not an agent name or ID")
    if ANY_AGENT in value and len(value) > 1:
        raise ValueError(f"{ANY_AGENT!r} (any agent) goes alone")
    return tuple(dict.fromkeys(value))


def new_webhook_secret() -> str:
    """Return a new Standard Webhooks secret: ``whsec_`` and base64 of random bytes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(
        secrets.token_bytes(WEBHOOK_SECRET_BYTES)).decode()


def _webhook_url(value: Any) -> str:
    # NOTE: any host, loopback included: only the admin deploys (the admin token), and
    # could reach the host's services anyway; no redirect is followed and no response
    # body is kept (agentainer.webhooks.delivery), so a URL reads nothing back
    if not isinstance(value, str) or len(value) > WEBHOOK_URL_MAX \
            or not WEBHOOK_URL_RE.match(value):
        raise ValueError(f"{value!r} is not an http(s) URL of at most {WEBHOOK_URL_MAX} "
                         "characters (host or IP, optional port, path and query of "
                         "printable ASCII; no user@, no #fragment)")
    return value


def _webhook_secret(value: Any) -> str:
    if not isinstance(value, str) or not WEBHOOK_SECRET_RE.match(value):
        raise ValueError("must be whsec_ followed by padded base64 of 24 to 66 bytes "
                         "(as Standard Webhooks secrets are); omit it to have one generated")
    return value


def _image(value: Any) -> str:
    if not isinstance(value, str) or len(value) > IMAGE_MAX or not IMAGE_RE.match(value):
        raise ValueError(f"{value!r} is not an image reference (example: nginx:latest)")
    return value


def _env(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError("must be an object of NAME: value")
    if len(value) > MAX_ENV:
        raise ValueError(f"at most {MAX_ENV} variables")
    for key, val in value.items():
        if not ENV_KEY_RE.match(key):
            raise ValueError(f"{key!r} is not a variable name")
        if key in RESERVED_ENV:
            raise ValueError(f"{key} is set by Agentainer and cannot be overridden")
        if not isinstance(val, str) or "\0" in val:
            raise ValueError(f"the value of {key} must be a string")
    return dict(value)


def _volumes(value: Any) -> tuple[Volume, ...]:
    if not isinstance(value, list) or len(value) > MAX_VOLUMES:
        raise ValueError(f"must be a list of at most {MAX_VOLUMES} volumes")
    return tuple(_volume(item) for item in value)


def _volume(item: Any) -> Volume:
    if not isinstance(item, dict):
        raise ValueError("each volume is an object with container_path and host_path or volume")
    _reject_unknown(item, frozenset({"host_path", "volume", "container_path", "read_only"}),
                    "volume")
    target = item.get("container_path")
    if not isinstance(target, str) or not target.startswith("/"):
        raise ValueError(f"container_path {target!r} must be an absolute path")
    if ".." in target.split("/"):
        raise ValueError(f"container_path {target!r} must not contain '..'")
    target = "/" + posixpath.normpath(target).lstrip("/")  # NOTE: Docker's view of the path
    if target == "/":
        raise ValueError("container_path must not be /")
    host, name = item.get("host_path"), item.get("volume")
    if (host is None) == (name is None):
        raise ValueError("each volume needs exactly one of host_path and volume")
    if host is not None and (not isinstance(host, str) or not host.startswith("/")):
        raise ValueError(f"host_path {host!r} must be absolute (the CLI resolves relative paths)")
    if name is not None and (not isinstance(name, str) or not VOLUME_NAME_RE.match(name)):
        raise ValueError(f"volume name {name!r} is invalid")
    read_only = item.get("read_only", False)
    if not isinstance(read_only, bool):
        raise ValueError("read_only must be true or false")
    return Volume(container_path=target, host_path=host, volume=name, read_only=read_only)


def _health_check(value: Any) -> HealthCheck:
    if not isinstance(value, dict):
        raise ValueError("must be an object with endpoint, interval, timeout, retries")
    _reject_unknown(value, frozenset({"endpoint", "interval", "timeout", "retries"}),
                    "health_check")
    endpoint = value.get("endpoint", "/health")
    if not isinstance(endpoint, str) or not endpoint.startswith("/"):
        raise ValueError(f"endpoint {endpoint!r} must be a path starting with /")
    interval = units.parse_duration(value.get("interval", 30))
    check = HealthCheck(
        endpoint=endpoint, interval=interval,
        timeout=units.parse_duration(value.get("timeout", min(5.0, interval))),
        retries=units.parse_positive_int(value.get("retries", 3)),
    )
    # NOTE: a timeout past the interval is allowed, as Docker allows it: one agent's
    # probes never overlap (monitor.lanes.Lanes), so the next one just starts later
    if check.interval < 1 or check.timeout <= 0:
        raise ValueError("need interval >= 1s and timeout > 0")
    return check
