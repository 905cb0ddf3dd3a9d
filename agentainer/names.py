"""The grammars of the names Agentainer accepts: agent IDs and names, image references,
environment keys, volume names and ``Host`` names. Pure functions and patterns, shared by
the settings (config.py), the deploy spec (agents/spec.py) and the HTTP layer (api/)."""

import re

ANY_HOST = "*"

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}\Z")
ID_RE = re.compile(r"^agent-[0-9a-f]{12}\Z")
# NOTE: Docker's reference grammar (distribution/reference): an optional registry (with a
# dot or a port, or localhost), lowercase path components, a tag, a digest
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = (rf"(?:localhost(?::[0-9]+)?|{_DOMAIN_PART}(?:\.{_DOMAIN_PART})+(?::[0-9]+)?"
           rf"|{_DOMAIN_PART}:[0-9]+)")
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_PATTERN = (rf"^(?:{_DOMAIN}/)?{_PATH}(?:/{_PATH})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
                 r"(?:@sha256:[0-9a-f]{64})?$")
# NOTE: Docker refuses a repository name over 255 characters once normalized, and a bare
# name gains docker.io/library/ (18): the whole reference stays within what is left
IMAGE_MAX = 255 - len("docker.io/library/")
IMAGE_RE = re.compile(IMAGE_PATTERN.removesuffix("$") + r"\Z")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
VOLUME_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}\Z")
# NOTE: a Swarm placement constraint: node.<attribute> or engine.labels.<label>, == or !=,
# a value without spaces (Swarm's own grammar, docker/swarmkit constraint.go)
CONSTRAINT_PATTERN = (r"^(?:node\.(?:id|hostname|role|platform\.os|platform\.arch)"
                      r"|(?:node|engine)\.labels\.[A-Za-z0-9_.-]{1,100})"
                      r" ?(?:==|!=) ?[A-Za-z0-9_.-]{1,100}$")
CONSTRAINT_RE = re.compile(CONSTRAINT_PATTERN.removesuffix("$") + r"\Z")


def host_name(host: str) -> str:
    """Return the name in a ``Host`` value: lowercased, without its port, brackets or
    trailing dot (``[::1]:8081`` -> ``::1``, ``LocalHost.:80`` -> ``localhost``).

    NOTE: the port is not checked: a rebinding page's name differs whatever the port,
    and a forwarded port (``ssh -L 9000:127.0.0.1:8081``) must keep working.
    """
    text = host.strip().lower()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    name, colon, port = text.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        text = name
    elif colon and not port:
        text = name  # NOTE: "localhost:" is "localhost"
    return text.rstrip(".")


def parse_allowed_hosts(value: str) -> tuple[str, ...]:
    """Convert the ``allowed_hosts`` setting: names (or ``*``, any), comma separated.

    Raises:
        ValueError: an entry is not a host name.
    """
    names = []
    for part in str(value).split(","):
        if not part.strip():
            continue
        name = ANY_HOST if part.strip() == ANY_HOST else host_name(part)
        if name != ANY_HOST and (not name or any(c in name for c in "/@ \t?#")):
            raise ValueError(f"{part.strip()!r} is not a host name")
        names.append(name)
    return tuple(dict.fromkeys(names))


# NOTE: a webhook URL: http or https, a host name, IPv4 or bracketed IPv6 address (no
# user:password@, which GET /agents would show), a port 1-65535, then a path and query of
# printable ASCII without a fragment (percent-encode the rest). The OpenAPI document
# carries the same pattern, so what it describes is exactly what a deploy accepts.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = (r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}"
         r"|[1-9][0-9]{0,3})")
WEBHOOK_URL_PATTERN = (rf"^https?://(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]{{2,45}}\])"
                       rf'(?::{_PORT})?(?:[/?][!-"$-~]*)?$')
WEBHOOK_URL_RE = re.compile(WEBHOOK_URL_PATTERN.removesuffix("$") + r"\Z")
WEBHOOK_URL_MAX = 2048
# NOTE: a Standard Webhooks secret: whsec_ and padded base64 of 24 to 66 bytes
_B64 = "[A-Za-z0-9+/]"
WEBHOOK_SECRET_PATTERN = (rf"^whsec_(?:{_B64}{{4}}){{8,21}}"
                          rf"(?:{_B64}{{4}}|{_B64}{{3}}=|{_B64}{{2}}==)?$")
WEBHOOK_SECRET_RE = re.compile(WEBHOOK_SECRET_PATTERN.removesuffix("$") + r"\Z")
